"""SqueezeNet specifics the registry-wide tests do not cover: how the convolutional classifier
maps onto the ``head`` / features contract, and the ceil-mode pooling grid."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model
from cnn_flax.models.squeezenet import Fire
from tests.helpers import random_variables


def _last_fire_output(model, variables, x):
    """The model's logits and the output of its last fire module (``fire9``)."""
    seen = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, Fire) and context.module.name == "fire9":
            seen["maps"] = out
        return out

    with nn.intercept_methods(record):
        out = model.apply(variables, x, train=False)
    return out, seen["maps"]


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_head_is_the_1x1_classifier_and_features_are_the_pooled_maps(name):
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    model = create_model(name, num_classes=6)
    variables = random_variables(model, x)
    logits, maps = _last_fire_output(model, variables, x)
    head = variables["params"]["head"]
    assert head["kernel"].shape == (512, 6)
    # torchvision's classifier: 1x1 convolution (the head, at every position), ReLU, average.
    expected = jnp.mean(jax.nn.relu(maps @ head["kernel"] + head["bias"]), axis=(1, 2))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    # The ReLU sits between the head and the pooling: the head applied to the pooled features
    # is a different function.
    pooled = jnp.mean(maps, axis=(1, 2))
    assert not np.allclose(logits, pooled @ head["kernel"] + head["bias"], atol=1e-3)

    features_model = create_model(name, num_classes=0)
    features_vars = {"params": {k: v for k, v in variables["params"].items() if k != "head"}}
    features = features_model.apply(features_vars, x, train=False)
    np.testing.assert_allclose(features, pooled, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_ceil_mode_pools_give_torchvisions_13x13_grid(name):
    # At 224 pixels the last fire module works on 13x13 maps (floor-mode pools would give 12x12:
    # 109 -> 54 -> 26 -> 12 for v1.0).
    model = create_model(name)
    x = jnp.zeros((1, 224, 224, 3))

    def run():
        variables = model.init(jax.random.key(0), x, train=False)
        return _last_fire_output(model, variables, x)[1]

    assert jax.eval_shape(run).shape == (1, 13, 13, 512)
