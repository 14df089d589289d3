"""EfficientNet options the generic tests do not cover: stochastic depth, compound-scaling
overrides, the Lite variants, BatchNorm settings."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, layers
from cnn_flax.models.efficientnet import B0_STAGES
from cnn_flax.models.inverted_residual import MBConvSpec
from tests.helpers import param_count

# Two small stages keep the train-mode applies cheap; the second has a residual block.
TINY = (
    MBConvSpec(expand_ratio=1, kernel_size=3, strides=1, features=16, repeats=1),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=2, features=24, repeats=3),
)


def init_shapes(name: str, *, res: int = 32, **overrides) -> dict:
    model = create_model(name, **overrides)
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), train=False)
    )


def recorded(name: str, module_type: type, attrs: tuple[str, ...], **overrides) -> list[tuple]:
    """``attrs`` of every ``module_type`` call while initialising ``name``, in call order."""
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, module_type) and context.method_name == "__call__":
            seen.append(tuple(getattr(context.module, a) for a in attrs))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        init_shapes(name, **overrides)
    return seen


def stage_repeats(params: dict) -> list[int]:
    stages = [int(k.split("_")[0][len("stage") :]) for k in params if k.startswith("stage")]
    return [stages.count(s) for s in range(1, max(stages) + 1)]


# ---------------------------------------------------------------- stochastic depth


def test_drop_path_rate_grows_linearly_with_block_index():
    rates = [r for (r,) in recorded("efficientnet_b0", layers.DropPath, ("rate",))]
    # B0 has 16 blocks; only blocks with a residual (j > 0 in a stage) have stochastic depth,
    # at torchvision's 0.2 * (global block index) / 16.
    expected = [0.2 * b / 16 for b in (2, 4, 6, 7, 9, 10, 12, 13, 14)]
    np.testing.assert_allclose(rates, expected)


def _tiny_b0(drop_path: float) -> nn.Module:
    # No dropout, so only drop path uses the "dropout" key.
    return create_model(
        "efficientnet_b0",
        num_classes=5,
        stages=TINY,
        dropout=0.0,
        drop_path=drop_path,
    )


@functools.partial(jax.jit, static_argnames=("rate", "train"))
def _tiny_logits(variables, x, key, *, rate: float, train: bool) -> jax.Array:
    model = _tiny_b0(rate)
    rngs = {"dropout": jax.random.key(key)}
    if not train:
        return model.apply(variables, x, train=False, rngs=rngs)
    return model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)[0]


def test_drop_path_changes_outputs_only_in_training():
    x = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    # Parameters do not depend on the rate, so every configuration shares them. They are drawn
    # with numpy: compiling Flax's initialisers costs more CPU time than the whole test otherwise.
    shapes = jax.eval_shape(lambda: _tiny_b0(0.0).init(jax.random.key(1), x, train=False))
    rng = np.random.default_rng(0)
    variables = {
        "params": jax.tree.map(
            lambda s: 0.3 * rng.standard_normal(s.shape, np.float32), shapes["params"]
        ),
        "batch_stats": jax.tree.map(lambda s: np.ones(s.shape, np.float32), shapes["batch_stats"]),
    }

    def logits(rate: float, train: bool, key: int) -> np.ndarray:
        return np.asarray(_tiny_logits(variables, x, key, rate=rate, train=train))

    # Training: different keys drop different residual branches.
    assert not np.allclose(logits(0.5, True, 0), logits(0.5, True, 1))
    # With rate 0 the key does not matter.
    np.testing.assert_array_equal(logits(0.0, True, 0), logits(0.0, True, 1))
    # Evaluation ignores the key and gives the rate-0 network's output (no rescaling).
    np.testing.assert_array_equal(logits(0.5, False, 0), logits(0.5, False, 1))
    np.testing.assert_allclose(logits(0.5, False, 0), logits(0.0, False, 0), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- compound scaling overrides


def test_width_override_scales_every_stage_with_make_divisible():
    params = init_shapes("efficientnet_b0", width_mult=1.5)["params"]
    assert params["stem"]["conv"]["kernel"].shape[-1] == 48
    for s, spec in enumerate(B0_STAGES, start=1):
        out = params[f"stage{s}_block0"]["project"]["conv"]["kernel"].shape[-1]
        assert out == layers.make_divisible(spec.features * 1.5, 8)
    assert params["head_conv"]["conv"]["kernel"].shape[-1] == 4 * 480
    assert stage_repeats(params) == [1, 2, 2, 3, 3, 4, 1]


def test_depth_override_rounds_repeats_up():
    params = init_shapes("efficientnet_b0", depth_mult=1.5)["params"]
    assert stage_repeats(params) == [2, 3, 3, 5, 5, 6, 2]
    assert params["head_conv"]["conv"]["kernel"].shape[-1] == 1280


def test_model_is_resolution_independent():
    small = init_shapes("efficientnet_b0", res=32)
    large = init_shapes("efficientnet_b0", res=64)
    assert jax.tree.map(lambda a: a.shape, small) == jax.tree.map(lambda a: a.shape, large)


@pytest.mark.parametrize(
    "name, width, depth", [("efficientnet_b1", 1.0, 1.1), ("efficientnet_b7", 2.0, 3.1)]
)
def test_registered_variants_are_overrides_of_b0(name, width, depth):
    b0_scaled = param_count("efficientnet_b0", width_mult=width, depth_mult=depth)
    assert b0_scaled == param_count(name)


@pytest.mark.torch
@pytest.mark.parametrize("width, depth", [(1.3, 1.0), (1.0, 1.5), (1.01, 1.0)])
def test_overrides_match_torchvision(width, depth):
    # 1.01 is a width where torchvision's head (4x the last stage) and the TF reference's
    # (1280 scaled) differ: 1280 vs 1296. We follow torchvision.
    efficientnet = pytest.importorskip("torchvision.models.efficientnet")
    setting, last = efficientnet._efficientnet_conf(
        "efficientnet_b0", width_mult=width, depth_mult=depth
    )
    tv = efficientnet.EfficientNet(setting, dropout=0.2, last_channel=last)
    expected = sum(p.numel() for p in tv.parameters())
    assert param_count("efficientnet_b0", width_mult=width, depth_mult=depth) == expected


# ---------------------------------------------------------------- EfficientNet-Lite


@pytest.mark.parametrize("name", [f"efficientnet_lite{i}" for i in range(5)])
def test_lite_has_no_se_and_fixed_stem_head(name):
    params = init_shapes(name)["params"]
    blocks = [v for k, v in params.items() if k.startswith("stage")]
    assert blocks and not any("se" in b for b in blocks)
    assert params["stem"]["conv"]["kernel"].shape[-1] == 32
    assert params["head_conv"]["conv"]["kernel"].shape[-1] == 1280
    repeats = stage_repeats(params)
    assert repeats[0] == 1 and repeats[-1] == 1


def test_lite4_scales_the_middle_stages_only():
    # Lite4 (width 1.4, depth 1.8) against B4 (same coefficients): the middle stages agree.
    lite, b4 = (
        stage_repeats(init_shapes(n)["params"]) for n in ("efficientnet_lite4", "efficientnet_b4")
    )
    assert lite[1:-1] == b4[1:-1]
    assert (lite[0], lite[-1]) == (1, 1) and (b4[0], b4[-1]) == (2, 2)


def test_lite_uses_relu6():
    model = create_model("efficientnet_lite0")
    assert model.activation is jax.nn.relu6 and model.se_ratio == 0.0


@pytest.mark.parametrize(
    "name, momentum, epsilon",
    [
        ("efficientnet_b0", 0.9, 1e-5),
        ("efficientnet_b4", 0.9, 1e-5),
        ("efficientnet_b5", 0.99, 1e-3),  # torchvision: BatchNorm2d(eps=1e-3, momentum=0.01)
        ("efficientnet_lite0", 0.99, 1e-3),  # TF: decay 0.99, epsilon 1e-3
    ],
)
def test_batch_norm_settings(name, momentum, epsilon):
    assert set(recorded(name, nn.BatchNorm, ("momentum", "epsilon"))) == {(momentum, epsilon)}
