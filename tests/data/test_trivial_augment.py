"""TrivialAugment Wide against torchvision's TrivialAugmentWide: the op set and magnitude bins,
each op at given magnitudes on the same uint8 image (the recipe's PIL path, bilinear, fill 0),
and the distribution of the op / magnitude / sign draws. Runtime ~8 s."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnn_flax.data import augment, trivial_augment
from tests.data.conftest import data_config

autoaugment = pytest.importorskip("torchvision.transforms.autoaugment")
pytestmark = pytest.mark.torch
BILINEAR = autoaugment.InterpolationMode.BILINEAR
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Natural-looking crops (smooth regions and edges): one square, one not."""
    import skimage.data

    photo = skimage.data.astronaut()
    return [
        np.ascontiguousarray(photo[100:196:2, 180:276:2]),
        np.ascontiguousarray(photo[60:200:2, 150:250:2]),
    ]


def _space() -> dict:
    return autoaugment.TrivialAugmentWide()._augmentation_space(31)


def test_ops_and_magnitude_bins_are_torchvisions():
    ours = trivial_augment.magnitude_bins()
    theirs = _space()
    assert tuple(theirs) == trivial_augment.OPS == tuple(ours)
    for name, (magnitudes, signed) in theirs.items():
        values, our_signed = ours[name]
        assert our_signed == signed, name
        # Bit-equal: the translation bins are truncated to whole pixels (15.999999 -> 15).
        np.testing.assert_array_equal(values, magnitudes.numpy().reshape(-1).astype(np.float32))


@pytest.mark.parametrize("name", trivial_augment.OPS)
def test_each_op_matches_torchvision_at_its_magnitudes(name, images):
    """Colour ops are bit-exact (PIL's fixed-point grey, truncating blends). Geometric ops may
    differ by 1 level in <= 0.5% of the pixels: float32 bilinear weights against PIL's doubles
    flip an occasional truncation."""
    magnitudes, signed = _space()[name]
    values = magnitudes.reshape(-1).tolist()
    picks = sorted({values[0], values[len(values) // 2], values[-1], values[len(values) // 3]})
    picks += [-v for v in picks if v] if signed else []
    for image in images:
        for magnitude in picks:
            reference = autoaugment._apply_op(
                Image.fromarray(image), name, magnitude, interpolation=BILINEAR, fill=None
            )
            ours = trivial_augment.apply_op(name, tf.constant(image), tf.constant(magnitude))
            diff = np.abs(np.asarray(reference, int) - ours.numpy().astype(int))
            if name in GEOMETRIC:
                assert diff.max() <= 1 and (diff > 0).mean() <= 0.005, (magnitude, diff.max())
            else:
                assert diff.max() == 0, (magnitude, diff.max(), (diff > 0).mean())


def _torchvision_draws(count: int, monkeypatch) -> list[tuple[str, float]]:
    """torchvision's own choices, recorded by replacing the op it applies."""
    import torch

    draws = []
    monkeypatch.setattr(
        autoaugment, "_apply_op", lambda img, name, m, **_: draws.append((name, m)) or img
    )
    torch.manual_seed(0)
    transform = autoaugment.TrivialAugmentWide(interpolation=BILINEAR)
    image = Image.new("RGB", (4, 4))
    for _ in range(count):
        transform(image)
    return draws


def _our_draws(count: int) -> list[tuple[str, float]]:
    seeds = tf.stack([tf.zeros([count], tf.int64), tf.range(count, dtype=tf.int64)], axis=1)
    ops, magnitudes = tf.vectorized_map(trivial_augment.draw, seeds)
    return [(trivial_augment.OPS[o], float(m)) for o, m in zip(ops.numpy(), magnitudes.numpy())]


def test_draws_follow_torchvisions_distribution(monkeypatch):
    """Uniform op, uniform bin, fair sign, and only torchvision's values: both samplers' counts
    within 5 standard deviations of those probabilities."""
    count = 14_000
    space = _space()
    allowed = {
        name: {float(v) for v in m.reshape(-1).tolist()} | {-float(v) for v in m.reshape(-1)}
        for name, (m, _) in space.items()
    }
    for draws in (_torchvision_draws(count, monkeypatch), _our_draws(count)):
        ops = collections.Counter(name for name, _ in draws)
        p_op = 1 / len(space)
        sigma = (count * p_op * (1 - p_op)) ** 0.5
        assert (
            set(ops) == set(space) and max(abs(c - count * p_op) for c in ops.values()) < 5 * sigma
        )
        assert all(m in allowed[name] for name, m in draws)
        signed = [(name, m) for name, m in draws if space[name][1]]
        nonzero = [m for _, m in signed if m != 0]  # bin 0 is 0 whatever the sign
        negative = sum(m < 0 for m in nonzero)
        assert abs(negative - len(nonzero) / 2) < 5 * (len(nonzero) / 4) ** 0.5
        bins = collections.Counter(
            int(np.argmin(np.abs(space[name][0].numpy() - abs(m)))) for name, m in signed
        )
        expected = len(signed) / 31
        assert max(abs(c - expected) for c in bins.values()) < 5 * (expected * 30 / 31) ** 0.5


def test_trivial_augment_is_deterministic_in_its_seed_and_exclusive_in_the_config(images):
    image = tf.constant(images[0])
    outs = [trivial_augment.trivial_augment_wide(image, tf.constant([0, s])) for s in range(16)]
    again = trivial_augment.trivial_augment_wide(image, tf.constant([0, 5]))
    np.testing.assert_array_equal(outs[5], again)
    assert len({o.numpy().tobytes() for o in outs}) > 8
    config = data_config("digits", "/unused", augment=dict(trivial_augment_wide=True))
    assert augment.from_config(config) is trivial_augment.trivial_augment_wide
    config.augment.randaugment.num_layers = 2
    with pytest.raises(ValueError, match="choose one augmentation policy, got augment.randaug"):
        augment.from_config(config)
