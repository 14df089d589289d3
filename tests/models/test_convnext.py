"""ConvNeXt specifics the registry-wide tests do not cover: stochastic depth, layer scale, the
stage layout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, layers
from cnn_flax.models.convnext import TINY, ConvNeXtBlock


def _init_shapes(name: str, **overrides):
    model = create_model(name, num_classes=10, **overrides)
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )


def test_drop_path_grows_linearly_to_the_last_block():
    rates = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.DropPath):
            rates.append(context.module.rate)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        _init_shapes("convnext_tiny")
    # torchvision: block b of B has stochastic_depth_prob * b / (B - 1); tiny's prob is 0.1.
    total = sum(s.num_blocks for s in TINY)
    np.testing.assert_allclose(rates, [0.1 * b / (total - 1) for b in range(total)])


def test_layer_scale_starts_at_1e_6_per_channel():
    model = create_model("convnext_tiny", num_classes=10, width_mult=0.125)
    shapes = _init_shapes("convnext_tiny", width_mult=0.125)["params"]
    assert shapes["stage3_block0"]["layer_scale"].shape == (48,)  # 384 channels at 1/8
    # The real initialiser of one block, as the model binds it.
    block = ConvNeXtBlock(
        conv=layers.bind_conv(nn.Conv, dtype=jnp.float32, use_bias=True),
        norm=layers.bind_norm(nn.LayerNorm, train=False, dtype=jnp.float32, epsilon=1e-6),
        dense=nn.Dense,
        activation=model.activation,
        layer_scale_init=model.layer_scale_init,
        drop_path=0.0,
    )
    variables = block.init(jax.random.key(0), jnp.zeros((1, 4, 4, 48)), train=False)
    scale = variables["params"]["layer_scale"]
    np.testing.assert_array_equal(np.asarray(scale), np.full(48, 1e-6, np.float32))


@pytest.mark.parametrize(
    ("name", "depths", "widths"),
    [
        ("convnext_tiny", (3, 3, 9, 3), (96, 192, 384, 768)),
        ("convnext_small", (3, 3, 27, 3), (96, 192, 384, 768)),
        ("convnext_base", (3, 3, 27, 3), (128, 256, 512, 1024)),
        ("convnext_large", (3, 3, 27, 3), (192, 384, 768, 1536)),
    ],
)
def test_stage_layout(name, depths, widths):
    params = _init_shapes(name)["params"]
    for s, (depth, width) in enumerate(zip(depths, widths), start=1):
        blocks = [k for k in params if k.startswith(f"stage{s}_block")]
        assert len(blocks) == depth
        assert params[f"stage{s}_block0"]["depthwise"]["kernel"].shape == (7, 7, 1, width)
        assert ("downsample" + str(s) in params) == (s > 1)
    assert "batch_stats" not in _init_shapes(name)  # LayerNorm only
