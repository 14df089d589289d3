"""ResNet family: shortcuts (options A and B, none for plain twins), v1.5 stride placement, grouped
and wide bottlenecks, the width option and zero_init_residual."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from cnn_flax.models import create_model, list_models
from cnn_flax.models.resnet import BasicBlock, ResNet

CIFAR_DEPTHS = (20, 32, 44, 56, 110)


def _init(model, res: int, batch: int = 1):
    x = jnp.zeros((batch, res, res, 3))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _materialise(model, x: jax.Array) -> dict:
    """Initialised variables. An RBG key: XLA on CPU compiles threefry initialisers ~8x slower."""
    return jax.jit(lambda x: model.init(jax.random.key(0, impl="unsafe_rbg"), x, train=False))(x)


def _flat_params(model, res: int) -> dict:
    return traverse_util.flatten_dict(_init(model, res)["params"], sep="/")


def _count(flat: dict) -> int:
    return sum(v.size for v in flat.values())


def test_registered_names():
    assert list_models("resnet_cifar") == [
        f"{kind}{d}" for d in CIFAR_DEPTHS for kind in ("resnet", "plain")
    ]
    for name in ("resnet18", "resnext50_32x4d", "wide_resnet50_2", "plain18", "plain34"):
        assert name in list_models("resnet")


@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_cifar_option_a_adds_no_parameters(depth):
    # Option A shortcuts are parameter-free, so the residual net and its plain twin have the very
    # same parameter tree (paper sec. 4.2), and the depth is 6n + 2 weighted layers.
    res = _flat_params(create_model(f"resnet{depth}", num_classes=10), 32)
    plain = _flat_params(create_model(f"plain{depth}", num_classes=10), 32)
    assert not any("shortcut" in k for k in res)
    assert {k: v.shape for k, v in res.items()} == {k: v.shape for k, v in plain.items()}
    assert _count(res) == _count(plain)
    weighted = [k for k in res if k.endswith("conv/kernel") or k == "head/kernel"]
    assert len(weighted) == depth


@pytest.mark.parametrize(
    "depth, projected_blocks",
    [
        (18, {"stage2_block0", "stage3_block0", "stage4_block0"}),
        (34, {"stage2_block0", "stage3_block0", "stage4_block0"}),
        (50, {"stage1_block0", "stage2_block0", "stage3_block0", "stage4_block0"}),
    ],
)
def test_plain_imagenet_count_is_residual_minus_projections(depth, projected_blocks):
    # The paper gives FLOPs, not parameters, for its plain nets: a plain net is its residual twin
    # with the option-B projection shortcuts removed, every other name and shape unchanged.
    res = _flat_params(create_model(f"resnet{depth}"), 224)
    plain = _flat_params(create_model(f"plain{depth}"), 224)
    shortcut = {k: v for k, v in res.items() if "/shortcut/" in k}
    assert {k.split("/")[0] for k in shortcut} == projected_blocks
    rest = {k: v.shape for k, v in res.items() if k not in shortcut}
    assert rest == {k: v.shape for k, v in plain.items()}
    assert _count(plain) == _count(res) - _count(shortcut)


def _zero_last_bn(params: dict, last_conv: str) -> dict:
    flat = traverse_util.flatten_dict(params, sep="/")
    for key in flat:
        if f"/{last_conv}/bn/scale" in key:
            flat[key] = jnp.zeros_like(flat[key])
    return traverse_util.unflatten_dict(flat, sep="/")


def _stem_then_option_a(variables: dict, x: jax.Array) -> jax.Array:
    """Logits of a CIFAR ResNet whose residual branches are all zero: stem, then the shortcuts."""
    p, s = variables["params"]["stem"], variables["batch_stats"]["stem"]
    y = jax.lax.conv_general_dilated(
        x, p["conv"]["kernel"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = (y - s["bn"]["mean"]) / jnp.sqrt(s["bn"]["var"] + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
    y = jax.nn.relu(y)
    # Stages 2 and 3 each keep every second pixel and append zero channels: 16 -> 32 -> 64.
    y = y[:, ::2, ::2, :][:, ::2, ::2, :]
    y = jnp.concatenate([y, jnp.zeros(y.shape[:3] + (3 * y.shape[-1],))], axis=-1)
    head = variables["params"]["head"]
    return jnp.mean(y, axis=(1, 2)) @ head["kernel"] + head["bias"]


def test_residual_and_plain_twins_with_zeroed_branches():
    # With every residual branch's last BN scale at zero (and zero BN bias), a residual block is
    # its shortcut, so the residual net reduces to stem + option-A shortcuts + head, while the
    # plain twin, having no shortcut to add, outputs the head bias alone. The same variables serve
    # both, since the twins share one parameter tree.
    kwargs = {"num_classes": 10, "width_mult": 1 / 16}
    residual = create_model("resnet20", **kwargs)
    plain = create_model("plain20", **kwargs)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 16, 16, 3), dtype=np.float32))
    variables = _materialise(residual, x)
    variables = {
        "params": dict(variables["params"]),
        "batch_stats": jax.tree.map(
            lambda v: v + 0.1 * rng.uniform(size=v.shape).astype(np.float32),
            variables["batch_stats"],
        ),
    }
    variables["params"]["head"] = {
        "kernel": variables["params"]["head"]["kernel"],
        "bias": jnp.arange(10, dtype=jnp.float32),
    }
    apply_res = jax.jit(lambda v, x: residual.apply(v, x, train=False))
    apply_plain = jax.jit(lambda v, x: plain.apply(v, x, train=False))
    logits_res = apply_res(variables, x)
    logits_plain = apply_plain(variables, x)
    assert not np.allclose(logits_res, logits_plain, atol=1e-3)

    zeroed = {**variables, "params": _zero_last_bn(variables["params"], "conv2")}
    chex.assert_trees_all_close(apply_res(zeroed, x), _stem_then_option_a(zeroed, x), atol=1e-5)
    chex.assert_trees_all_close(apply_plain(zeroed, x), jnp.broadcast_to(jnp.arange(10.0), (2, 10)))


@pytest.mark.parametrize("name, last_conv", [("resnet18", "conv2"), ("resnet50", "conv3")])
def test_zero_init_residual(name, last_conv):
    small = {"width_mult": 1 / 16, "stage_sizes": (1, 1)}
    flat = _flat_params(create_model(name, **small), 32)
    assert any(f"/{last_conv}/bn/scale" in k for k in flat)
    model = create_model(name, zero_init_residual=True, **small)
    variables = _materialise(model, jnp.zeros((1, 32, 32, 3)))
    for key, value in traverse_util.flatten_dict(variables["params"], sep="/").items():
        if key.endswith("bn/scale"):
            expected = 0.0 if f"/{last_conv}/bn/" in key else 1.0
            np.testing.assert_array_equal(value, np.full(value.shape, expected), err_msg=key)


def test_zero_init_residual_refused_for_plain_nets():
    model = create_model("plain18", zero_init_residual=True)
    with pytest.raises(ValueError, match="zero_init_residual=False"):
        _init(model, 32)


def _block_output_shapes(model, res: int) -> dict:
    x = jnp.zeros((1, res, res, 3))
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), x, train=False, capture_intermediates=True)
    )
    flat = traverse_util.flatten_dict(variables["intermediates"], sep="/")
    return {k.removesuffix("/__call__"): v[0].shape for k, v in flat.items()}


def test_bottleneck_strides_on_its_3x3_v1_5():
    # torchvision's v1.5: in the first block of stages 2-4 the 1x1 reduction keeps the
    # resolution and the 3x3 halves it (the paper strides the 1x1 instead).
    shapes = _block_output_shapes(create_model("resnet50", num_classes=10, width_mult=1 / 8), 64)
    assert shapes["stem"] == (1, 32, 32, 8)  # 7x7/2; the max pool then halves again
    assert shapes["stage1_block0/conv1"] == (1, 16, 16, 8)
    assert shapes["stage2_block0/conv1"] == (1, 16, 16, 16)
    assert shapes["stage2_block0/conv2"] == (1, 8, 8, 16)
    assert shapes["stage2_block0/shortcut"] == (1, 8, 8, 64)
    assert shapes["stage4_block2"] == (1, 2, 2, 256)


def test_cifar_stage_shapes_and_width():
    shapes = _block_output_shapes(create_model("resnet20", num_classes=10, width_mult=1 / 4), 32)
    assert shapes["stem"] == (1, 32, 32, 4)
    assert shapes["stage1_block2"] == (1, 32, 32, 4)
    assert shapes["stage2_block0"] == (1, 16, 16, 8)
    assert shapes["stage3_block2"] == (1, 8, 8, 16)
    flat = _flat_params(create_model("resnet20", num_classes=10), 32)
    assert flat["stem/conv/kernel"].shape == (3, 3, 3, 16)
    assert flat["stage3_block0/conv1/conv/kernel"].shape == (3, 3, 32, 64)
    assert flat["head/kernel"].shape == (64, 10)


@pytest.mark.parametrize(
    "name, conv1_width, conv2_kernel",
    [
        ("resnet50", 64, (3, 3, 64, 64)),
        ("resnext50_32x4d", 128, (3, 3, 4, 128)),  # 32 groups of 4 channels
        ("wide_resnet50_2", 128, (3, 3, 128, 128)),  # twice ResNet-50's inner width
    ],
)
def test_bottleneck_widths(name, conv1_width, conv2_kernel):
    flat = _flat_params(create_model(name), 224)
    assert flat["stage1_block0/conv1/conv/kernel"].shape == (1, 1, 64, conv1_width)
    assert flat["stage1_block0/conv2/conv/kernel"].shape == conv2_kernel
    assert flat["stage1_block0/conv3/conv/kernel"].shape == (1, 1, conv1_width, 256)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"stem": "tiny"}, "Unknown stem 'tiny'"),
        ({"shortcut": "C"}, "Unknown shortcut 'C'"),
        ({"groups": 32}, "use block=Bottleneck"),
    ],
)
def test_bad_fields_are_named(overrides, match):
    model = ResNet(stage_sizes=(1, 1), block=BasicBlock, base_width=4, **overrides)
    with pytest.raises(ValueError, match=match):
        _init(model, 32)
