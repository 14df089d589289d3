"""MobileNet v1/v2/v3 options and structure the generic forward/param/parity tests do not cover."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model
from cnn_flax.models.mobilenet_v3 import V3_LARGE, V3_SMALL
from tests.helpers import param_count


def init_shapes(name: str, *, res: int = 32, **overrides) -> dict:
    model = create_model(name, **overrides)
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), train=False)
    )


def mult_adds(name: str, *, res: int = 224, **overrides) -> int:
    """Multiply-adds of every convolution and dense layer, counted from traced shapes."""
    total = 0

    inside = set()  # depthwise.Conv's __call__ runs nn.Conv's: count each module once

    def count(next_fun, args, kwargs, context):
        nonlocal total
        module, x = context.module, args[0] if args else None
        if id(module) in inside:
            return next_fun(*args, **kwargs)
        inside.add(id(module))
        try:
            out = next_fun(*args, **kwargs)
        finally:
            inside.discard(id(module))
        if context.method_name == "__call__" and isinstance(module, nn.Conv):
            kh, kw = module.kernel_size
            in_per_group = x.shape[-1] // module.feature_group_count
            total += int(np.prod(out.shape[1:])) * kh * kw * in_per_group
        elif context.method_name == "__call__" and isinstance(module, nn.Dense):
            total += x.shape[-1] * out.shape[-1]
        return out

    with nn.intercept_methods(count):  # XLA's convolutions, as the paper counts them
        init_shapes(name, res=res, **{"conv": "xla", **overrides})
    return total


# ---------------------------------------------------------------- MobileNet v1


@pytest.mark.parametrize(
    "name, widths",
    [
        ("mobilenet_v1", (32, 64, 128, 256, 512, 1024)),
        ("mobilenet_v1_075", (24, 48, 96, 192, 384, 768)),
        ("mobilenet_v1_050", (16, 32, 64, 128, 256, 512)),
        ("mobilenet_v1_025", (8, 16, 32, 64, 128, 256)),
    ],
)
def test_v1_width_multiplier_thins_every_layer(name, widths):
    params = init_shapes(name)["params"]
    assert params["stem"]["conv"]["kernel"].shape == (3, 3, 3, widths[0])
    # Blocks 1, 2, 4, 6, 12 are the first to reach each new width (Table 1).
    for block, width in zip((1, 2, 4, 6, 12), widths[1:], strict=True):
        pointwise = params[f"block{block}"]["pointwise"]["conv"]["kernel"]
        assert pointwise.shape[-1] == width
        assert params[f"block{block}"]["depthwise"]["conv"]["kernel"].shape[2] == 1
    assert params["head"]["kernel"].shape == (widths[-1], 1000)


def test_v1_full_convolution_replaces_each_separable_pair():
    params = init_shapes("mobilenet_v1_full_conv")["params"]
    assert set(params["block2"]) == {"full_conv"}
    assert params["block2"]["full_conv"]["conv"]["kernel"].shape == (3, 3, 64, 128)
    # Paper Table 4: 29.3M vs 4.2M parameters, a ratio of about 7.
    ratio = param_count("mobilenet_v1_full_conv") / param_count("mobilenet_v1")
    assert 6.8 < ratio < 7.1


@pytest.mark.parametrize(
    "name, paper_million_mult_adds",
    [
        ("mobilenet_v1", 569),  # Table 4 and 6
        ("mobilenet_v1_075", 325),  # Table 6
        ("mobilenet_v1_050", 149),
        ("mobilenet_v1_025", 41),
        ("mobilenet_v1_full_conv", 4866),  # Table 4
    ],
)
def test_v1_mult_adds_match_paper(name, paper_million_mult_adds):
    # Counting the classifier too; the paper's 4866M is 1M under that (the classifier's 1.0M),
    # so allow the last printed digit plus one.
    assert abs(mult_adds(name) / 1e6 - paper_million_mult_adds) < 1.5


# ---------------------------------------------------------------- MobileNet v2


@pytest.mark.parametrize(
    "width_mult, stem, block17, head_conv", [(0.5, 16, 160, 1280), (1.4, 48, 448, 1792)]
)
def test_v2_width_mult_rounds_like_torchvision(width_mult, stem, block17, head_conv):
    params = init_shapes("mobilenet_v2", width_mult=width_mult)["params"]
    assert params["stem"]["conv"]["kernel"].shape[-1] == stem
    assert params["block17"]["project"]["conv"]["kernel"].shape[-1] == block17
    # The last convolution is never thinned below 1280 (Sec. 6.1).
    assert params["head_conv"]["conv"]["kernel"].shape[-1] == head_conv


def test_v2_first_block_has_no_expansion():
    params = init_shapes("mobilenet_v2")["params"]
    assert set(params["block1"]) == {"depthwise", "project"}
    assert set(params["block2"]) == {"expand", "depthwise", "project"}
    assert len([k for k in params if k.startswith("block")]) == 17


@pytest.mark.torch
@pytest.mark.parametrize(
    "name, tv_name, width_mult",
    [
        ("mobilenet_v2", "mobilenet_v2", 0.75),
        ("mobilenet_v2", "mobilenet_v2", 1.3),
        ("mobilenet_v3_large", "mobilenet_v3_large", 0.75),
        ("mobilenet_v3_small", "mobilenet_v3_small", 1.25),
    ],
)
def test_width_mult_param_count_matches_torchvision(name, tv_name, width_mult):
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.get_model(tv_name, weights=None, width_mult=width_mult)
    assert param_count(name, width_mult=width_mult) == sum(p.numel() for p in tv.parameters())


# ---------------------------------------------------------------- MobileNet v3


@pytest.mark.parametrize(
    "name, blocks", [("mobilenet_v3_large", V3_LARGE), ("mobilenet_v3_small", V3_SMALL)]
)
def test_v3_squeeze_excite_where_the_table_says(name, blocks):
    params = init_shapes(name)["params"]
    for k, spec in enumerate(blocks, start=1):
        block = params[f"block{k}"]
        assert ("se" in block) == spec.use_se, k
        if spec.use_se:
            # make_divisible(expanded / 4, 8) squeeze channels.
            squeeze = block["se"]["fc1"]["kernel"].shape[-1]
            assert squeeze % 8 == 0 and abs(squeeze - spec.expand_features / 4) < 8


@pytest.mark.parametrize(
    "name, momentum, epsilon",
    [
        ("mobilenet_v1", 0.9, 1e-5),
        ("mobilenet_v2", 0.9, 1e-5),
        # torchvision: BatchNorm2d(eps=0.001, momentum=0.01).
        ("mobilenet_v3_large", 0.99, 1e-3),
        ("mobilenet_v3_small", 0.99, 1e-3),
    ],
)
def test_batch_norm_settings_follow_torchvision(name, momentum, epsilon):
    settings = set()

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm):
            settings.add((context.module.momentum, context.module.epsilon))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        init_shapes(name)
    assert settings == {(momentum, epsilon)}
