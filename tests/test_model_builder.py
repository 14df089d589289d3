"""The config's model: a convolution preset chosen by name in ``model_overrides.conv``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import configs
from cnn_flax.model_builder import build_model
from cnn_flax.models import depthwise


def _config(*overrides: str):
    config = configs.get_config("quickstart")  # resnet20, the CIFAR ResNet
    return configs.apply_overrides(config, list(overrides))


def test_conv_preset_by_name_builds_the_same_function_with_the_same_parameters():
    default = build_model(_config(), num_classes=10, num_devices=1)
    fast = build_model(_config("model_overrides.conv=cpu"), num_classes=10, num_devices=1)
    assert fast.conv.func is depthwise.Conv
    assert fast.conv.keywords == depthwise.PRESETS["cpu"]
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3), jnp.float32)
    variables = default.init(jax.random.key(1), x, train=False)
    fast_variables = fast.init(jax.random.key(1), x, train=False)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, fast_variables)

    def loss(model):
        def f(params):
            y, _ = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(y**2)

        return jax.jit(jax.value_and_grad(f))(variables["params"])

    (want, want_grads), (got, got_grads) = loss(default), loss(fast)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-3, atol=2e-4 * float(jnp.max(jnp.abs(w))))


def test_unknown_conv_preset_is_one_clear_error():
    with pytest.raises(ValueError, match=r"'fast'.*choose one of \['cpu', 'shift', 'xla'\]"):
        build_model(_config("model_overrides.conv=fast"), num_classes=10, num_devices=1)
