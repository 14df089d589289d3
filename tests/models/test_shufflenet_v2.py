"""ShuffleNet V2 specifics the registry-wide tests do not cover: channel shuffle (against
torchvision's own function), the channel split's untouched half, unit validation, the recipe."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import configs
from cnn_flax.models import layers, list_models
from cnn_flax.models.shufflenet_v2 import ShuffleUnit, channel_shuffle


def test_every_torchvision_shufflenet_v2_is_registered():
    torchvision = pytest.importorskip("torchvision")
    assert sorted(list_models("shufflenet_v2")) == sorted(
        torchvision.models.list_models(include="shufflenet_v2*")
    )


def test_channel_shuffle_interleaves_the_groups():
    x = jnp.arange(6.0).reshape(1, 1, 1, 6)
    np.testing.assert_array_equal(channel_shuffle(x, 2)[0, 0, 0], [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(channel_shuffle(x, 3)[0, 0, 0], [0, 2, 4, 1, 3, 5])
    with pytest.raises(ValueError, match="6 channels do not split into 4 groups"):
        channel_shuffle(x, 4)


@pytest.mark.torch
@pytest.mark.parametrize("groups", [2, 3, 4])
def test_channel_shuffle_matches_torchvision(groups):
    torch = pytest.importorskip("torch")
    shufflenetv2 = pytest.importorskip("torchvision.models.shufflenetv2")
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 12)).astype(np.float32)  # NHWC
    theirs = shufflenetv2.channel_shuffle(torch.from_numpy(x.transpose(0, 3, 1, 2)), groups)
    ours = channel_shuffle(jnp.asarray(x), groups)
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy().transpose(0, 2, 3, 1))


def _unit(features: int, strides: int) -> ShuffleUnit:
    return ShuffleUnit(
        features,
        strides=strides,
        conv=layers.bind_conv(nn.Conv, dtype=jnp.float32),
        norm=layers.bind_norm(nn.BatchNorm, train=False, dtype=jnp.float32),
        activation=nn.relu,
    )


def test_stride_1_unit_passes_half_the_channels_through_unchanged():
    """The channel split (Fig. 3c): after the shuffle, every even channel is the input's first
    half, untouched; the odd ones come from the convolved second half."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    unit = _unit(16, 1)
    variables = unit.init(jax.random.key(1), x)
    out = unit.apply(variables, x)
    np.testing.assert_array_equal(np.asarray(out[..., 0::2]), np.asarray(x[..., :8]))
    assert not np.allclose(np.asarray(out[..., 1::2]), np.asarray(x[..., 8:]))
    assert set(variables["params"]) == {"branch2"}  # no left branch without downsampling


def test_downsampling_unit_convolves_both_halves():
    x = jnp.zeros((1, 8, 8, 24))
    unit = _unit(48, 2)
    shapes = jax.eval_shape(functools.partial(unit.init, jax.random.key(0)), x)["params"]
    assert shapes["branch1"]["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 24)
    assert shapes["branch1"]["conv"]["conv"]["kernel"].shape == (1, 1, 24, 24)
    assert shapes["branch2"]["conv1"]["conv"]["kernel"].shape == (1, 1, 24, 24)
    out = jax.eval_shape(lambda: unit.apply(unit.init(jax.random.key(0), x), x))
    assert out.shape == (1, 4, 4, 48)


@pytest.mark.parametrize(("in_features", "features"), [(16, 24), (15, 15)])
def test_stride_1_unit_refuses_a_width_change_or_odd_width(in_features, features):
    with pytest.raises(ValueError, match="keeps an even width"):
        _unit(features, 1).init(jax.random.key(0), jnp.zeros((1, 4, 4, in_features)))


@pytest.mark.parametrize("name", ["shufflenet_v2_x1_5", "shufflenet_v2_x2_0"])
def test_recipe_follows_torchvision_command(name):
    config = configs.get_config(name)
    # --batch-size 128 on 8 GPUs, --lr 0.5 (the config's rate is per 256 images).
    assert config.batch_size == 1024
    assert config.optimizer.lr * config.batch_size / 256 == pytest.approx(0.5)
    assert (config.num_epochs, config.optimizer.weight_decay) == (600.0, 2e-5)
    assert (config.schedule.name, config.schedule.warmup_epochs) == ("cosine", 5.0)
    assert config.label_smoothing == 0.1
    aug = config.data.augment
    assert (aug.mixup_alpha, aug.cutmix_alpha, aug.random_erasing) == (0.2, 1.0, 0.1)
    assert aug.trivial_augment_wide and config.data.repeated_augmentation == 4
    # --train-crop-size 176, --val-resize-size 232 (and the default 224 crop).
    assert (config.data.image_size, config.data.eval_resize_size) == (176, 232)
    assert config.data.eval_crop_size == 224
    assert config.ema_decay is not None
