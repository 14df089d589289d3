"""The config's model: a convolution preset chosen by name in ``model_overrides.conv``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from cnn_flax import configs
from cnn_flax.models import depthwise
from cnn_flax.training.model_builder import build_model


def _config(*overrides: str):
    config = configs.get_config("quickstart")  # resnet20, the CIFAR ResNet
    return configs.apply_overrides(config, list(overrides))


def test_conv_preset_by_name_reaches_every_convolution_with_the_same_parameters():
    """Traced only (the implementations' numerics are tests/models/test_depthwise.py's)."""
    default = build_model(_config(), num_classes=10, num_devices=1)
    fast = build_model(_config("model_overrides.conv=cpu"), num_classes=10, num_devices=1)
    assert fast.conv.func is depthwise.Conv
    assert fast.conv.keywords == depthwise.PRESETS["cpu"]
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)

    def shapes(model):
        return jax.tree.map(
            jnp.shape, jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
        )

    assert shapes(fast) == shapes(default)

    def convolutions(model):
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
        grad = jax.grad(lambda v, x: jnp.sum(model.apply(v, x, train=False)))
        eqns = jax.make_jaxpr(grad)(variables, x).jaxpr.eqns
        return sum(e.primitive.name == "conv_general_dilated" for e in eqns)

    # ResNet-20: 19 3x3 convolutions. nn.Conv: forward, input and kernel gradient each (the
    # first one's input gradient is not needed); the preset: kernel gradients as matrix products.
    assert convolutions(default) == 3 * 19 - 1
    assert convolutions(fast) < convolutions(default)


def test_unknown_conv_preset_is_one_clear_error():
    with pytest.raises(
        ValueError, match=r"'fast'.*choose one of \['auto', 'cpu', 'shift', 'xla'\]"
    ):
        build_model(_config("model_overrides.conv=fast"), num_classes=10, num_devices=1)
