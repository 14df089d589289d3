"""AutoAugment/RandAugment ops against PIL, their reference semantics. Runtime ~5 s."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from cnn_flax.data import augment, augment_ops


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A natural-looking 48x48 crop (smooth regions and edges), not noise."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[100:196:2, 180:276:2])


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image)


def _close(ours, reference, atol=1):
    ours, reference = np.asarray(ours).astype(int), np.asarray(reference).astype(int)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= atol, np.abs(ours - reference).max()


def test_equalize_autocontrast_invert_posterize_solarize_match_pil(photo):
    _close(augment_ops.equalize(tf.constant(photo)), ImageOps.equalize(_pil(photo)), atol=0)
    _close(augment_ops.autocontrast(tf.constant(photo)), ImageOps.autocontrast(_pil(photo)))
    _close(augment_ops.invert(tf.constant(photo)), ImageOps.invert(_pil(photo)), atol=0)
    _close(augment_ops.posterize(tf.constant(photo), 3), ImageOps.posterize(_pil(photo), 3), atol=0)
    _close(
        augment_ops.solarize(tf.constant(photo), 100), ImageOps.solarize(_pil(photo), 100), atol=0
    )
    np.testing.assert_array_equal(augment_ops.solarize(tf.constant(photo), 256), photo)


@pytest.mark.parametrize(
    "name,enhancer",
    [
        ("color", ImageEnhance.Color),
        ("contrast", ImageEnhance.Contrast),
        ("brightness", ImageEnhance.Brightness),
        ("sharpness", ImageEnhance.Sharpness),
    ],
)
@pytest.mark.parametrize("factor", [0.3, 1.0, 1.7])
def test_enhance_ops_match_pil(photo, name, enhancer, factor):
    ours = getattr(augment_ops, name)(tf.constant(photo), factor)
    _close(ours, enhancer(_pil(photo)).enhance(factor), atol=2)


def test_geometric_ops(photo):
    image = tf.constant(photo)
    # Rotating a square image by 90 degrees counter-clockwise is np.rot90.
    np.testing.assert_array_equal(augment_ops.rotate(image, 90.0), np.rot90(photo))
    shifted = augment_ops.translate_x(image, 5.0).numpy()
    np.testing.assert_array_equal(shifted[:, :-5], photo[:, 5:])
    assert (shifted[:, -5:] == augment_ops.FILL).all()
    sheared = augment_ops.shear_x(image, 0.5).numpy()  # row y shifts left by y / 2
    np.testing.assert_array_equal(sheared[10, :20], photo[10, 5:25])
    np.testing.assert_array_equal(augment_ops.shear_y(image, 0.0), photo)


@pytest.mark.parametrize(
    "make", [lambda: augment.randaugment, lambda: augment.autoaugment], ids=["rand", "auto"]
)
def test_policies_are_deterministic_in_the_seed(photo, make):
    fn = make()
    kwargs = {"num_layers": 2, "magnitude": 9.0} if fn is augment.randaugment else {}
    image = tf.constant(photo)
    outs = [fn(image, tf.constant([0, s], tf.int64), **kwargs).numpy() for s in range(12)]
    again = fn(image, tf.constant([0, 3], tf.int64), **kwargs).numpy()
    np.testing.assert_array_equal(outs[3], again)
    assert all(o.shape == photo.shape and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) > 6  # different seeds, different augmentations


def test_every_randaugment_op_runs_at_full_magnitude(photo):
    dull = photo // 2 + 40  # not full-range, so AutoContrast has work to do
    for name in augment.RANDAUGMENT_OPS + ("Invert", "SolarizeAdd"):
        out = augment._apply(name, tf.constant(dull), tf.constant(10.0), tf.constant([1, 2]))
        assert out.shape == photo.shape and out.dtype == tf.uint8, name
        if name != "Identity":
            assert not np.array_equal(out, dull), name
