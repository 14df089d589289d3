"""The convolution a model runs by default: chosen per backend, same parameters, batch-local.

Every family's default ``conv=nn.Conv`` is bound to :func:`depthwise.backend_default` (issue 22):
on XLA:CPU the implementations measured faster there, elsewhere XLA's own; on every backend the
convolutions that XLA's partitioner would gather the whole batch for run on each device's shard.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnn_flax.models import create_model, depthwise, layers
from cnn_flax.perf import trainer_step
from cnn_flax.training import parallel


def _grouped_convolutions(model: nn.Module, x: jax.Array) -> list[int]:
    """feature_group_count of every XLA convolution in the model's eval forward pass."""
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables)
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                found.append(eqn.params["feature_group_count"])
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return found


def test_the_batch_axis_is_the_trainers():
    assert depthwise.BATCH_AXIS == parallel.DATA_AXIS


def test_the_default_is_chosen_by_backend():
    assert depthwise.backend_default("cpu")["depthwise"] == "shift"
    assert depthwise.backend_default("cpu")["pointwise"] == "dot"
    # XLA's own k x k convolutions, kernel gradients included: at the benchmark's batch 8 they
    # measured faster than the im2col products (benchmarks/RESULTS.md).
    assert depthwise.backend_default("cpu")["dense"] == "xla"
    for backend in ("gpu", "tpu"):
        fields = depthwise.backend_default(backend)
        assert {k: fields[k] for k in ("depthwise", "pointwise", "dense")} == dict(
            depthwise="xla", pointwise="xla", dense="xla"
        )
    for backend in ("cpu", "gpu", "tpu"):
        assert depthwise.backend_default(backend)["grouped"] == "local"
    assert "depthwise=shift" in depthwise.describe("auto")  # these tests run on XLA:CPU


def test_a_default_model_on_cpu_runs_no_depthwise_convolution_through_xla():
    x = jnp.zeros((1, 32, 32, 3))
    default = _grouped_convolutions(create_model("mobilenet_v3_small", num_classes=10), x)
    xla = _grouped_convolutions(create_model("mobilenet_v3_small", num_classes=10, conv="xla"), x)
    assert any(groups > 1 for groups in xla)  # the depthwise convolutions, in XLA's form
    assert all(groups == 1 for groups in default), default
    assert len(default) < len(xla)  # 1x1 convolutions became matrix products too


def _conv_fields(bound) -> dict:
    module = bound(features=4, kernel_size=(3, 3))
    assert type(module) is depthwise.Conv
    return {name: getattr(module, name) for name in depthwise.backend_default()}


def test_a_preset_name_and_nn_conv_bind_alike():
    by_class = _conv_fields(layers.bind_conv(nn.Conv, dtype=jnp.float32))
    assert by_class == depthwise.backend_default()
    assert _conv_fields(layers.bind_conv("auto", dtype=jnp.float32)) == by_class
    assert _conv_fields(layers.bind_conv("xla", dtype=jnp.float32))["depthwise"] == "xla"


@pytest.mark.parametrize(
    "name, overrides",
    [
        pytest.param(  # depthwise, 1x1, dense stem (the default run's parity tests cover them)
            "mobilenet_v3_small", dict(dropout=0.0), marks=pytest.mark.variants
        ),
        ("resnext50_32x4d", dict(stage_sizes=(1, 1), width_mult=0.25)),  # grouped 3x3
    ],
)
def test_implementations_share_parameters_and_function(name, overrides):
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    results = {}
    for conv in ("xla", None):
        model = create_model(name, num_classes=10, **overrides, **({"conv": conv} if conv else {}))
        variables = model.init(jax.random.key(1), x, train=False)

        def loss(params, variables=variables, model=model):
            # Eval mode: train-mode BatchNorm over 2 images of 1x1 maps (the last stages at
            # 32 px) would amplify rounding differences into percent-level gradient changes.
            logits = model.apply({**variables, "params": params}, x, train=False)
            return jnp.sum(logits**2)

        forward = jax.jit(functools.partial(model.apply, train=False))
        results[conv] = (
            variables,
            forward(variables, x),
            jax.jit(jax.grad(loss))(variables["params"]),
        )
    (v_xla, y_xla, g_xla), (v_default, y_default, g_default) = results["xla"], results[None]
    assert jax.tree.structure(v_xla) == jax.tree.structure(v_default)
    jax.tree.map(np.testing.assert_array_equal, v_xla, v_default)  # same init, same names
    np.testing.assert_allclose(y_default, y_xla, rtol=1e-5, atol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=max(1e-5 * np.abs(b).max(), 1e-30)
        ),
        g_default,
        g_xla,
    )


KINDS = {
    "depthwise": (dict(depthwise="shift", depthwise_grad_chunk=1), 3, 16),
    "grouped": (dict(grouped="local"), 3, 4),
    "dense": (dict(dense="taps", dense_patch_chunk=2), 3, 1),
    "pointwise": (dict(pointwise="dot"), 1, 1),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_batch_local_convolutions_sum_kernel_gradients_over_devices(kind):
    fields, k, groups = KINDS[kind]
    mesh = Mesh(np.array(jax.devices()), (depthwise.BATCH_AXIS,))
    conv = depthwise.Conv(
        features=16,
        kernel_size=(k, k),
        padding="SAME",
        feature_group_count=groups,
        use_bias=False,
        **fields,
    )
    x = jax.random.normal(jax.random.key(0), (2 * mesh.size, 8, 8, 16))
    variables = conv.init(jax.random.key(1), x)

    def loss(v, x):
        return jnp.sum(jnp.sin(conv.apply(v, x)))

    expected = jax.grad(loss, argnums=(0, 1))(variables, x)
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec(depthwise.BATCH_AXIS)))
    compiled = parallel.lower_on_mesh(
        jax.jit(jax.grad(loss, argnums=(0, 1))), mesh, variables, sharded
    )
    compiled = compiled.compile()
    assert "all-gather" not in compiled.as_text()
    got = compiled(variables, sharded)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5), got, expected)


def _all_gathers(model: nn.Module, *, in_mesh_context: bool) -> int:
    step, state, batch = trainer_step.build(model, dtype="float32", batch_size=16, resolution=32)
    mesh = parallel.create_mesh()
    state = parallel.replicate(state, mesh)
    batch = jax.device_put(batch, parallel.data_sharding(mesh))
    jitted = jax.jit(step)
    lowered = (
        parallel.lower_on_mesh(jitted, mesh, state, batch)
        if in_mesh_context
        else jitted.lower(state, batch)
    )
    return lowered.compile().as_text().count("all-gather(")


def test_the_data_parallel_train_step_gathers_no_activations():
    """openxla/xla#47945: a grouped convolution of a batch-sharded step all-gathers the batch."""
    assert jax.device_count() == 8
    model = create_model("resnext50_32x4d", stage_sizes=(1, 1), width_mult=0.25, conv="xla")
    assert _all_gathers(model, in_mesh_context=False) > 0, "the XLA bug this works around is gone"
    default = create_model("resnext50_32x4d", stage_sizes=(1, 1), width_mult=0.25)
    assert _all_gathers(default, in_mesh_context=True) == 0
