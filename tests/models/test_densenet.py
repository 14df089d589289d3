"""DenseNet specifics the registry-wide tests do not cover: the memory-efficient (rematerialised)
option, the widths dense connectivity and compression give, and the checkpoint files' legacy
key spelling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model
from tests.helpers import random_variables

# A small DenseNet, so both variants compile in seconds: two blocks of three layers.
TINY = {"block_config": (3, 3), "growth_rate": 8, "num_init_features": 16, "num_classes": 5}


def _train_outputs(memory_efficient: bool):
    model = create_model("densenet121", memory_efficient=memory_efficient, **TINY)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = random_variables(model, x)

    def loss(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(logits**2), (logits, updates["batch_stats"])

    (_, (logits, stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables["params"]
    )
    return logits, stats, grads


def test_memory_efficient_computes_the_same():
    plain_logits, plain_stats, plain_grads = _train_outputs(False)
    remat_logits, remat_stats, remat_grads = _train_outputs(True)
    # The forward pass is the same computation: bit for bit.
    np.testing.assert_array_equal(remat_logits, plain_logits)
    chex.assert_trees_all_equal(remat_stats, plain_stats)
    # The backward pass recomputes instead of reading back, and XLA fuses the two programs
    # differently: gradients agree to float32 rounding (the largest is ~3, errors ~1e-7).
    chex.assert_trees_all_close(remat_grads, plain_grads, rtol=1e-5, atol=1e-6)


def _primitive_names(jaxpr) -> list[str]:
    """Primitive names of every equation, nested jaxprs (pjit, remat) included."""
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        for value in eqn.params.values():
            for item in value if isinstance(value, tuple | list) else (value,):
                if isinstance(item, jax.extend.core.ClosedJaxpr):
                    names += _primitive_names(item.jaxpr)
                elif isinstance(item, jax.extend.core.Jaxpr):
                    names += _primitive_names(item)
    return names


def test_memory_efficient_rematerialises_every_bottleneck():
    remat = jax.make_jaxpr(jax.checkpoint(lambda x: x))(1.0).eqns[0].primitive.name
    x = jnp.zeros((2, 32, 32, 3))
    counts = []
    for memory_efficient in (False, True):
        model = create_model("densenet121", memory_efficient=memory_efficient, **TINY)
        variables = random_variables(model, x)
        jaxpr = jax.make_jaxpr(
            lambda v: model.apply(v, x, train=True, mutable=["batch_stats"])  # noqa: B023
        )(variables)
        counts.append(_primitive_names(jaxpr.jaxpr).count(remat))
    # One rematerialised region per dense layer with the option, none without.
    assert counts == [0, sum(TINY["block_config"])]


@pytest.mark.parametrize(
    ("name", "transition1", "features"),
    [
        # block 1 leaves 2k + 6k channels, halved by the first transition; features: the last
        # block's output (Table 1 layouts, torchvision's widths).
        ("densenet121", (256, 128), 1024),
        ("densenet161", (384, 192), 2208),
        ("densenet169", (256, 128), 1664),
        ("densenet201", (256, 128), 1920),
    ],
)
def test_dense_connectivity_and_compression_widths(name, transition1, features):
    model = create_model(name, num_classes=0)
    x = jnp.zeros((1, 32, 32, 3))
    variables, out = jax.eval_shape(
        lambda: (
            v := model.init(jax.random.key(0), x, train=False),
            model.apply(v, x, train=False),
        )
    )
    kernel = variables["params"]["transition1"]["conv"]["kernel"]
    assert kernel.shape == (1, 1, *transition1)
    assert out.shape == (1, features)
    assert "transition4" not in variables["params"]  # no transition after the last block


def test_compression_is_checked():
    model = create_model("densenet121", compression=0.0)
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="compression=0.0"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


@pytest.mark.torch
def test_legacy_checkpoint_keys_convert():
    """The published .pth files spell ``denselayer1.norm1`` as ``denselayer1.norm.1``."""
    torchvision = pytest.importorskip("torchvision")
    from cnn_flax.convert import from_torchvision

    sd = torchvision.models.densenet121(weights=None).state_dict()
    legacy = {}
    for key, value in sd.items():
        for part in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
            key = key.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        legacy[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    chex.assert_trees_all_equal(
        from_torchvision("densenet121", legacy), from_torchvision("densenet121", sd)
    )
