"""One contract for every registered model, checked over the whole registry.

From shapes alone (``jax.eval_shape``: nothing compiled or computed): NHWC in, float32 logits
``[batch, num_classes]`` out in every mode; ``num_classes=0`` gives the features the ``head``
layer would see; parameters float32 whatever the compute dtype; ``train`` keyword-only; the same
field names for the same idea in every family; BatchNorm's momentum and epsilon reach every
BatchNorm; per-device BatchNorm is found by type. A few models per family also run through
Flax NNX (``flax.nnx.bridge``).
"""

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.nnx import bridge

from cnn_flax.models import create_model, layers, list_families, list_models, model_info
from cnn_flax.models.norm import GroupBatchNorm, per_device_batch_norm
from tests.helpers import input_resolution, random_variables, zoo_params

BATCH = 2
# Names another family already uses for the same idea (contract: activation, width_mult,
# dropout, drop_path, bn_momentum, bn_epsilon).
SYNONYMS = {"act", "alpha", "width", "dropout_rate", "drop_path_rate", "momentum", "epsilon"}


def _images(name: str) -> jax.ShapeDtypeStruct:
    res = input_resolution(name)
    return jax.ShapeDtypeStruct((BATCH, res, res, 3), jnp.float32)


def _shapes(model: nn.Module, x: jax.ShapeDtypeStruct):
    """Variables, eval output and train output (with the mutable collections) as shapes."""

    def run(x):
        variables = model.init(jax.random.key(0), x, train=False)
        eval_out = model.apply(variables, x, train=False)
        train_out, updates = model.apply(
            variables,
            x,
            train=True,
            mutable=["batch_stats", layers.AUX_COLLECTION],
            rngs={"dropout": jax.random.key(1)},
        )
        return variables, eval_out, train_out, updates

    return jax.eval_shape(run, x)


@pytest.mark.parametrize("name", zoo_params(list_models()))
def test_model_contract(name):
    x = _images(name)
    model = create_model(name, num_classes=7, dtype=jnp.bfloat16)
    variables, eval_out, train_out, updates = _shapes(model, x)

    # Parameters and statistics float32 under bf16 compute; the classifier is ``head``.
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    head = variables["params"]["head"]
    assert head["kernel"].shape[-1] == 7
    # One output structure in every mode: a float32 array of logits.
    for out in (eval_out, train_out):
        assert isinstance(out, jax.ShapeDtypeStruct), f"{name} returned {type(out)}"
        assert (out.shape, out.dtype) == ((BATCH, 7), jnp.float32)
    for aux in layers.aux_outputs(updates):
        assert (aux.shape, aux.dtype) == ((BATCH, 7), jnp.float32)

    # num_classes=0: the features the head sees, and no head.
    features_model = create_model(name, num_classes=0)
    f_vars, f_eval, f_train, _ = _shapes(features_model, x)
    assert "head" not in f_vars["params"]
    assert f_eval.shape == f_train.shape == (BATCH, head["kernel"].shape[0])
    assert f_eval.dtype == jnp.float32


@pytest.mark.parametrize("name", list_models())
def test_fields_follow_the_contract(name):
    model = create_model(name)
    fields = {f.name for f in dataclasses.fields(model)}
    assert {"num_classes", "dtype"} <= fields
    assert not fields & SYNONYMS, f"{name} uses {fields & SYNONYMS}; see SYNONYMS"
    call = inspect.signature(type(model).__call__).parameters
    assert call["train"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("family", list_families())
def test_every_family_takes_the_contract_fields_from_one_declaration(family):
    """The shared fields (dtype, conv, activation; norm and its settings) are declared once, in
    ``layers.Contract`` and its two subclasses; a family restates one only to change its default
    (``layers.family_default``), which keeps it keyword-only like the declaration."""
    model = create_model(list_models(family)[0])
    assert isinstance(model, layers.Contract), f"{type(model).__name__} is no layers.Contract"
    base = layers.Contract
    for normalised in (layers.BatchNormContract, layers.LayerNormContract):
        base = normalised if isinstance(model, normalised) else base
    assert hasattr(model, "norm") == (base is not layers.Contract)
    shared = {f.name for f in dataclasses.fields(base)} - {"parent", "name"}
    for field in dataclasses.fields(model):
        if field.name in shared:
            assert field.kw_only, f"{type(model).__name__}.{field.name} is declared again"


def _norms_seen(model: nn.Module, x: jax.ShapeDtypeStruct, *, train: bool) -> list[nn.Module]:
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm | nn.LayerNorm):
            seen.append(context.module)
        return next_fun(*args, **kwargs)

    def run(x):
        variables = model.init(jax.random.key(0), x, train=False)
        with nn.intercept_methods(record):
            model.apply(
                variables,
                x,
                train=train,
                mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(1)},
            )

    jax.eval_shape(run, x)
    return seen


def _batch_norm_models() -> list[str]:
    """The first model of each family whose default norm is a BatchNorm, plus VGG-BN."""
    chosen: dict[str, str] = {}
    for name in list_models():
        model = create_model(name)
        if layers.is_batch_norm(getattr(model, "norm", None)) and (
            getattr(model, "batch_norm", True)
        ):
            chosen.setdefault(model_info(name).family, name)
    return sorted(chosen.values())


@pytest.mark.parametrize("name", _batch_norm_models())
def test_batch_norm_settings_reach_every_batch_norm(name):
    x = _images(name)
    model = create_model(name, bn_momentum=0.77, bn_epsilon=0.0123)
    norms = _norms_seen(model, x, train=True)
    assert norms and all(isinstance(n, nn.BatchNorm) for n in norms)
    assert {(n.momentum, n.epsilon) for n in norms} == {(0.77, 0.0123)}


@pytest.mark.parametrize("name", _batch_norm_models())
def test_per_device_batch_norm_is_found_by_type(name):
    x = _images(name)
    model = per_device_batch_norm(create_model(name, bn_epsilon=0.0123), 2)
    norms = _norms_seen(model, x, train=True)
    assert norms and all(type(n) is GroupBatchNorm and n.num_groups == 2 for n in norms)
    assert {n.epsilon for n in norms} == {0.0123}  # the model's own settings are kept


def test_per_device_batch_norm_leaves_other_models_alone():
    model = create_model("alexnet")
    assert per_device_batch_norm(model, 4) is model


def _one_per_family() -> list[str]:
    chosen: dict[str, str] = {}
    for name in list_models():
        chosen.setdefault(model_info(name).family, name)
    assert set(chosen) == set(list_families())
    return sorted(chosen.values())


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def nnx_module(linen: nn.Module, variables: dict, x: jax.Array) -> nnx.Module:
    """``bridge.ToNNX(linen)`` holding ``variables``.

    ``bridge.lazy_init`` (what a user calls) runs under ``nnx.eval_shape``, so it builds the NNX
    structure without compiling Flax's random initialisers (minutes for a deep net on 2 CPU
    cores); the values are then put in by path.
    """
    abstract = nnx.eval_shape(
        lambda: bridge.lazy_init(bridge.ToNNX(linen, rngs=nnx.Rngs(0, dropout=1)), x, train=False)
    )
    graphdef, state = nnx.split(abstract)
    pure = _merge(variables["params"], variables.get("batch_stats", {}))
    pure["to_nnx__rngs"] = nnx.to_pure_dict(nnx.state(nnx.Rngs(0, dropout=1)))
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


@pytest.mark.parametrize("name", _one_per_family())
def test_nnx_structure_matches_linen(name):
    """Every family wraps for NNX: ``bridge.lazy_init`` (traced) builds the Linen variables."""
    x = _images(name)
    linen = create_model(name, num_classes=3)
    abstract = nnx.eval_shape(
        lambda x: bridge.lazy_init(bridge.ToNNX(linen, rngs=nnx.Rngs(0)), x, train=False), x
    )
    linen_shapes = jax.eval_shape(lambda x: linen.init(jax.random.key(0), x, train=False), x)
    for collection, kind in (("params", nnx.Param), ("batch_stats", nnx.BatchStat)):
        ours = nnx.to_pure_dict(nnx.state(abstract, kind))
        theirs = linen_shapes.get(collection, {})
        shape = lambda leaf: leaf.shape
        assert jax.tree.map(shape, ours) == jax.tree.map(shape, dict(theirs)), collection


# The NNX wrapper is generic, so its numerics are checked on one model of each kind: BatchNorm
# (statistics as NNX state), dropout without BatchNorm, depthwise convolutions.
@pytest.mark.parametrize("name", ["resnet20", "alexnet", "mobilenet_v1_025"])
def test_usable_from_nnx(name):
    """The Linen model wrapped for NNX (``flax.nnx.bridge.ToNNX``) computes what Linen does,
    updates its BatchNorm statistics in train mode and gives gradients."""
    res = input_resolution(name)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((BATCH, res, res, 3)), jnp.float32)
    linen = create_model(name, num_classes=3)
    variables = random_variables(linen, x)
    module = nnx_module(linen, variables, x)

    @nnx.jit
    def forward(module, x):
        return module(x, train=False)

    out = forward(module, x)
    expected = jax.jit(lambda v, x: linen.apply(v, x, train=False))(variables, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-5)

    @nnx.jit
    def loss_and_grads(module, x):
        def loss(module):
            return jnp.mean(module(x, train=True, mutable=["batch_stats"]) ** 2)

        return nnx.value_and_grad(loss)(module)

    _, grads = loss_and_grads(module, x)
    grad_leaves = jax.tree.leaves(nnx.to_pure_dict(nnx.state(grads, nnx.Param)))
    assert grad_leaves and any(float(jnp.abs(g).max()) > 0 for g in grad_leaves)
    if "batch_stats" in variables:
        new_stats = nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))
        changed = jax.tree.map(
            lambda a, b: not np.allclose(a, b), variables["batch_stats"], new_stats
        )
        assert any(jax.tree.leaves(changed)), "train mode did not update BatchNorm statistics"
