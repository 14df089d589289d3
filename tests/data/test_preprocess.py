"""Per-example preprocessing: shapes, determinism in the seed, crop geometry. Runtime ~2 s."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnn_flax.data import preprocess


def _jpeg(array: np.ndarray, fmt: str = "JPEG") -> tf.Tensor:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, quality=95)
    return tf.constant(buffer.getvalue())


@pytest.fixture(scope="module")
def gradient() -> np.ndarray:
    """120x160 image whose red channel encodes x and green channel y."""
    y, x = np.mgrid[0:120, 0:160]
    return np.stack([x * 255 // 159, y * 255 // 119, np.full_like(x, 128)], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_inception_crop_shape_and_determinism(gradient, fmt):
    data = _jpeg(gradient, fmt)
    crops = [
        preprocess.inception_crop(data, tf.constant([0, s], tf.int64), image_size=32).numpy()
        for s in range(6)
    ]
    assert all(c.shape == (32, 32, 3) and c.dtype == np.uint8 for c in crops)
    again = preprocess.inception_crop(data, tf.constant([0, 2], tf.int64), image_size=32)
    np.testing.assert_array_equal(crops[2], again)
    assert len({c.tobytes() for c in crops}) == 6


def test_inception_crop_areas_follow_the_range(gradient):
    shape = tf.constant(gradient.shape)
    areas, ratios = [], []
    for s in range(200):
        w = preprocess._random_window(
            shape, tf.constant([1, s], tf.int64), preprocess.AREA_RANGE, preprocess.RATIO_RANGE
        ).numpy()
        areas.append(w[2] * w[3] / (120 * 160))
        ratios.append(w[3] / w[2])
    areas, ratios = np.array(areas), np.array(ratios)
    assert areas.min() >= 0.07 and areas.max() <= 1.0 and areas.min() < 0.2 and areas.max() > 0.8
    assert ratios.min() >= 0.7 and ratios.max() <= 1.45


def test_eval_centre_crop(gradient):
    out = preprocess.preprocess_for_eval(_jpeg(gradient), image_size=56, crop_ratio=0.875).numpy()
    assert out.shape == (56, 56, 3)
    # The crop is the centre 105x105 square: x in [27, 132), y in [7, 112) of the original.
    red, green = out[..., 0].astype(float), out[..., 1].astype(float)
    assert (
        abs(red[:, 0].mean() - 27 * 255 / 159) < 6 and abs(red[:, -1].mean() - 131 * 255 / 159) < 6
    )
    assert abs(green[0].mean() - 7 * 255 / 119) < 6 and abs(green[-1].mean() - 111 * 255 / 119) < 6


def test_pad_crop_and_flip_keep_the_pixels():
    image = tf.constant(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    crops = [preprocess.pad_and_random_crop(image, tf.constant([0, s]), pad=2) for s in range(20)]
    for crop in crops:
        crop = crop.numpy()
        nonzero = crop[(crop != 0).any(-1)]
        assert set(map(tuple, nonzero)) <= set(map(tuple, image.numpy().reshape(-1, 3)))
    flips = {
        preprocess.random_flip(image, tf.constant([0, s])).numpy().tobytes() for s in range(20)
    }
    assert flips == {image.numpy().tobytes(), image.numpy()[:, ::-1].tobytes()}
