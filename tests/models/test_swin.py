"""Swin specifics the registry-wide tests do not cover: the window geometry against
torchvision's, parity of a small Swin (V1 and V2) whose every stage shifts, masks and pads its
windows, stochastic depth, the converter's buffer checks and the recipe's weight-decay mask.

The registry-wide parity test runs the real variants at 36 px, where only stage 1 is larger
than one window. Exercising the shift in all four stages of the real configurations needs a
last stage of more than one window: 228 px for V1 (57, 29, 15, 8 tokens a side) and 260 px for
V2 (65, 33, 17, 9), too slow for every run. So the same torchvision class is built here with
small constructor arguments (patch 2, window 3, width 16) and fed 50x34 px: maps of 25/13/7/4 x
17/9/5/3 tokens, padded in every stage, merged from odd sizes, shifted in every stage, and in
the last stage shifted along the height only (its width is one window).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import configs
from cnn_flax.models import create_model, layers, swin
from cnn_flax.training import optim
from cnn_flax.training.run_plan import make_run_plan
from cnn_flax.weights import StateDictReader

PARITY_ATOL = 1e-4
SMALL = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (2, 2, 4, 4), "window_size": 3}
SMALL_IMAGES = (2, 50, 34)  # batch, height, width


def test_window_partition_roundtrip_and_order():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 9, 5)), jnp.float32)
    windows = swin.window_partition(x, 3)
    assert windows.shape == (2 * 2 * 3, 9, 5)
    # Windows run row-major within each image, tokens row-major within each window.
    np.testing.assert_array_equal(windows[1], x[0, 0:3, 3:6].reshape(9, 5))
    np.testing.assert_array_equal(windows[6 + 4], x[1, 3:6, 3:6].reshape(9, 5))
    np.testing.assert_array_equal(swin.window_reverse(windows, 3, 6, 9), x)


def test_relative_position_index_matches_torchvision():
    tv = pytest.importorskip("torchvision.models.swin_transformer")
    for window in (2, 3, 7, 8):
        attn = tv.ShiftedWindowAttention(4, [window, window], [0, 0], num_heads=2)
        expected = attn.relative_position_index.numpy()
        np.testing.assert_array_equal(swin.relative_position_index(window).reshape(-1), expected)


def test_relative_coords_table_matches_torchvision():
    tv = pytest.importorskip("torchvision.models.swin_transformer")
    for window in (2, 3, 8):
        attn = tv.ShiftedWindowAttentionV2(4, [window, window], [0, 0], num_heads=2)
        expected = attn.relative_coords_table.numpy()[0]
        np.testing.assert_allclose(swin.relative_coords_table(window), expected, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("height", "width", "window"),
    [(14, 14, 7), (10, 13, 7), (7, 14, 7), (16, 16, 8), (9, 12, 3), (6, 3, 3)],
)
def test_shift_mask_matches_torchvision(monkeypatch, height, width, window):
    """torchvision builds its mask inside ``shifted_window_attention``; with zero queries and
    keys and no position bias, what its softmax receives is exactly that mask, per window."""
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision.models.swin_transformer")
    seen = []
    softmax = torch.nn.functional.softmax

    def record(x, dim):
        seen.append(x.clone())
        return softmax(x, dim=dim)

    monkeypatch.setattr(tv.F, "softmax", record)
    channels, tokens, shift = 2, window * window, window // 2
    tv.shifted_window_attention(
        torch.randn(1, height, width, channels),
        torch.zeros(3 * channels, channels),
        torch.eye(channels),
        torch.zeros(1, 1, tokens, tokens),
        [window, window],
        1,
        shift_size=[shift, shift],
        training=False,
    )
    (theirs,) = seen
    padded_h, padded_w = -(-height // window) * window, -(-width // window) * window
    effective = swin.effective_shift(padded_h, padded_w, window, shift)
    ours = swin.shift_mask(padded_h, padded_w, window, effective)
    np.testing.assert_array_equal(ours, theirs[:, 0].numpy())
    if height > window or width > window:
        assert (ours == swin.MASK_VALUE).any()  # the case masks something


def _torchvision_small(version: int):
    """torchvision's SwinTransformer with SMALL's arguments, every constant randomised and the
    V1 position tables (N(0, 0.02) at init) scaled up so that a wrong index would show."""
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision.models.swin_transformer")
    from tests.convert.torch_reference import randomise_constants

    torch.manual_seed(0)
    v2 = {"block": tv.SwinTransformerBlockV2, "downsample_layer": tv.PatchMergingV2}
    model = tv.SwinTransformer(
        patch_size=[2, 2],
        embed_dim=SMALL["embed_dim"],
        depths=list(SMALL["depths"]),
        num_heads=list(SMALL["num_heads"]),
        window_size=[SMALL["window_size"]] * 2,
        stochastic_depth_prob=0.0,
        num_classes=10,
        **(v2 if version == 2 else {}),
    )
    randomise_constants(model, seed=1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                param.mul_(50.0)
    return model.eval()


def _small_parity(version: int):
    """(our logits, torchvision's) of the small Swin on the same random images and weights."""
    torch = pytest.importorskip("torch")
    tv = _torchvision_small(version)
    reader = StateDictReader(tv.state_dict())
    variables = swin.convert_torchvision(reader, window_size=SMALL["window_size"])
    assert reader.unused() == []
    images = np.random.default_rng(0).standard_normal((*SMALL_IMAGES, 3)).astype(np.float32)
    with torch.no_grad():
        theirs = tv(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    model = swin.SwinTransformer(
        **SMALL, patch_size=2, version=version, drop_path=0.0, num_classes=10
    )
    ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
    return ours, theirs


@pytest.mark.torch
@pytest.mark.parametrize("version", [1, 2])
def test_small_swin_matches_torchvision_with_shifts_in_every_stage(monkeypatch, version):
    masks = []
    shift_mask = swin.model.shift_mask

    def record(height, width, window, shift):
        masks.append((height, width, shift))
        return shift_mask(height, width, window, shift)

    monkeypatch.setattr(swin.model, "shift_mask", record)
    ours, theirs = _small_parity(version)
    # Every stage's second block masks its padded map; the last one shifts along the height only.
    assert masks == [(27, 18, (1, 1)), (15, 9, (1, 1)), (9, 6, (1, 1)), (6, 3, (1, 0))]
    assert np.max(np.abs(theirs[0] - theirs[1])) > 1e-2 * np.max(np.abs(theirs))
    err = float(np.max(np.abs(ours - theirs)))
    print(f"small swin v{version}: max abs logit error {err:.3g}, scale {np.abs(theirs).max():.3g}")
    assert err < PARITY_ATOL

    if version == 1:  # the mask code is shared by both versions: one compilation proves it
        # The mask matters here: without it the logits leave the tolerance far behind.
        monkeypatch.setattr(swin.model, "shift_mask", lambda *a: 0.0 * shift_mask(*a))
        unmasked, _ = _small_parity(version)
        assert np.max(np.abs(unmasked - theirs)) > 100 * PARITY_ATOL


@pytest.mark.torch
def test_checkpoint_for_another_window_is_refused():
    tv = _torchvision_small(2)
    with pytest.raises(ValueError, match="another Swin variant or window size"):
        swin.convert_torchvision(StateDictReader(tv.state_dict()), window_size=4)


def test_drop_path_grows_linearly_to_the_last_block():
    rates = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.DropPath):
            rates[context.module.scope.path] = context.module.rate
        return next_fun(*args, **kwargs)

    model = create_model("swin_t", num_classes=10)
    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros((1, 36, 36, 3)), train=False)
        )
    # torchvision: block b of B has stochastic_depth_prob * b / (B - 1); swin_t's prob is 0.2.
    np.testing.assert_allclose(list(rates.values()), [0.2 * b / 11 for b in range(12)])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"version": 3}, "version=3"),
        ({"num_heads": (5, 6, 12, 24)}, "not divisible"),
        ({"num_heads": (3, 6, 12)}, "one head count per stage"),
        ({"version": 2, "window_size": 1}, "window_size=1"),
    ],
)
def test_bad_configurations_name_the_field(override, message):
    model = create_model("swin_t", num_classes=10, **override)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros((1, 36, 36, 3)), train=False)
        )


@pytest.mark.parametrize(("name", "size"), [("swin_t", 224), ("swin_v2_t", 256)])
def test_recipe_follows_torchvision(name, size):
    config = configs.get_config(name)
    plan = make_run_plan(config, num_train=1_281_167)  # ImageNet-1k's train split
    peak = optim.peak_learning_rate(config, plan)
    assert peak == pytest.approx(1e-3)  # at batch 1024
    end = peak * config.schedule.end_lr_factor
    assert end == pytest.approx(1e-5)  # --lr-min
    assert (config.num_epochs, config.schedule.warmup_epochs) == (300, 20)
    assert config.data.augment.mixup_alpha == 0.8 and config.clip_grad_norm == 5.0
    assert config.data.image_size == size
    # --norm-weight-decay 0 --bias-weight-decay 0 --transformer-embedding-decay 0: only the
    # convolution and dense kernels decay.
    model = create_model(name, num_classes=10)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 36, 36, 3)), train=False)
    )["params"]
    mask = optim.weight_decay_mask(config)(shapes)
    decayed = {jax.tree_util.keystr(p) for p, d in jax.tree_util.tree_leaves_with_path(mask) if d}
    assert "['stage1_block0']['attn']['qkv']['kernel']" in decayed
    assert "['stem']['conv']['kernel']" in decayed
    assert not [k for k in decayed if "norm" in k or "bias" in k or "logit_scale" in k]
