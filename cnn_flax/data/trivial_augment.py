"""TrivialAugment Wide (Müller & Hutter, 2021) as torchvision's recipe runs it, in TensorFlow.

Per image: one of 14 ops drawn uniformly, one of 31 magnitude bins drawn uniformly, and for the
signed ops a sign drawn with probability 1/2, all from a stateless per-example seed (so a resumed
pipeline draws the same). The ops, bins and conventions are torchvision's `TrivialAugmentWide` on
PIL images (its training recipe's path): ImageEnhance blends for Brightness/Color/Contrast/
Sharpness at factor 1 + magnitude, shears about the top-left corner, translations by whole pixels
(the magnitude truncated, as `int()` does), rotations about the centre, and bilinear sampling with
black fill for the geometric ops (the recipe passes --interpolation bilinear; the class's own
default is nearest). tests/data/test_trivial_augment.py checks each op against torchvision.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from cnn_flax.data import augment_ops as ops

NUM_BINS = 31
FILL = 0
OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace in float32 as PyTorch's CPU kernel computes it: the first half counted up
    from `start`, the second half down from `end`, each a fused multiply-add of a float32 step.
    The last ulp matters: truncated to whole pixels, torchvision's translation bin 15 is 15 px
    (15.999999), where exact arithmetic gives 16."""
    index = np.arange(steps)
    step = float(np.float32((np.float32(end) - np.float32(start)) / np.float32(steps - 1)))
    up = float(np.float32(start)) + step * index  # float64 holds the exact product: one rounding
    down = float(np.float32(end)) - step * (steps - 1 - index)
    return np.where(index < steps // 2, up, down).astype(np.float32)


def magnitude_bins(num_bins: int = NUM_BINS) -> dict[str, tuple[np.ndarray, bool]]:
    """op -> (magnitudes, signed): torchvision's TrivialAugmentWide augmentation space; ops
    without a magnitude have the single value 0."""

    def lin(start: float, end: float) -> np.ndarray:
        return torch_linspace(start, end, num_bins)

    none = np.zeros(1, np.float32)
    ramp = np.arange(num_bins).astype(np.float32) / np.float32((num_bins - 1) / 6)
    return {
        "Identity": (none, False),
        "ShearX": (lin(0.0, 0.99), True),
        "ShearY": (lin(0.0, 0.99), True),
        "TranslateX": (lin(0.0, 32.0), True),
        "TranslateY": (lin(0.0, 32.0), True),
        "Rotate": (lin(0.0, 135.0), True),
        "Brightness": (lin(0.0, 0.99), True),
        "Color": (lin(0.0, 0.99), True),
        "Contrast": (lin(0.0, 0.99), True),
        "Sharpness": (lin(0.0, 0.99), True),
        "Posterize": ((8 - np.round(ramp)).astype(np.float32), False),
        "Solarize": (lin(255.0, 0.0), False),
        "AutoContrast": (none, False),
        "Equalize": (none, False),
    }


def _tables(num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """[op, bin] magnitudes (a bin of a magnitude-free op is 0) and [op] signed flags."""
    bins = magnitude_bins(num_bins)
    table = np.zeros([len(OPS), num_bins], np.float32)
    for i, name in enumerate(OPS):
        values = bins[name][0]
        table[i] = values if len(values) == num_bins else values[0]
    return table, np.array([bins[name][1] for name in OPS])


def _rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    """PIL's Image.rotate (counter-clockwise about the centre (W/2, H/2)); cos and sin rounded to
    15 decimals as PIL does, so multiples of 90 degrees land exactly on pixel centres."""
    theta = -tf.cast(degrees, tf.float64) * (math.pi / 180.0)
    cos = tf.round(tf.cos(theta) * 1e15) / 1e15
    sin = tf.round(tf.sin(theta) * 1e15) / 1e15
    cx = tf.cast(tf.shape(image)[1], tf.float64) / 2
    cy = tf.cast(tf.shape(image)[0], tf.float64) / 2
    matrix = [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy]
    return ops.affine(image, matrix, fill=FILL)


def _translate(image: tf.Tensor, pixels: tf.Tensor, *, axis: int) -> tf.Tensor:
    """Content moved right (axis 1) or down (axis 0) by whole `pixels`, uncovered pixels filled:
    exactly PIL's bilinear affine of an integer translation, without its resampling cost."""
    size = tf.shape(image)[axis]
    index = tf.range(size)
    kept = (index >= pixels) & (index < size + pixels)
    kept = tf.reshape(kept, [-1, 1, 1] if axis == 0 else [1, -1, 1])
    return tf.where(kept, tf.roll(image, pixels, axis=axis), tf.constant(FILL, image.dtype))


def apply_op(name: str, image: tf.Tensor, magnitude: tf.Tensor) -> tf.Tensor:
    """torchvision's `_apply_op(img, name, magnitude, BILINEAR, fill=None)` on a PIL image."""
    m = tf.cast(magnitude, tf.float32)
    pixels = tf.cast(m, tf.int32)  # int(): truncation toward zero
    if name == "Identity":
        return image
    if name == "ShearX":  # F.affine(shear=(atan(m) in degrees, 0), center=(0, 0))
        return ops.affine(image, [1.0, m, 0.0, 0.0, 1.0, 0.0], fill=FILL)
    if name == "ShearY":
        return ops.affine(image, [1.0, 0.0, 0.0, m, 1.0, 0.0], fill=FILL)
    if name == "TranslateX":
        return _translate(image, pixels, axis=1)
    if name == "TranslateY":
        return _translate(image, pixels, axis=0)
    if name == "Rotate":
        return _rotate(image, m)
    enhance = {
        "Brightness": ops.brightness,
        "Color": ops.color,
        "Contrast": ops.contrast,
        "Sharpness": ops.sharpness,
    }
    if name in enhance:
        return enhance[name](image, 1.0 + m)
    if name == "Posterize":
        return ops.posterize(image, tf.cast(m, tf.uint8))
    if name == "Solarize":
        return ops.solarize(image, m)
    if name == "AutoContrast":
        return ops.autocontrast(image)
    if name == "Equalize":
        return ops.equalize(image)
    raise ValueError(f"unknown TrivialAugment op {name!r}; available: {OPS}")


def draw(seed: tf.Tensor, num_bins: int = NUM_BINS) -> tuple[tf.Tensor, tf.Tensor]:
    """(op index, signed magnitude) for one image: op and bin uniform, sign a fair coin."""
    table, signed = _tables(num_bins)
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    op = tf.random.stateless_uniform([], seed=seeds[0], maxval=len(OPS), dtype=tf.int32)
    bin_ = tf.random.stateless_uniform([], seed=seeds[1], maxval=num_bins, dtype=tf.int32)
    negate = tf.random.stateless_uniform([], seed=seeds[2]) < 0.5
    magnitude = tf.gather_nd(tf.constant(table), tf.stack([op, bin_]))
    negate &= tf.gather(tf.constant(signed), op)
    return op, tf.where(negate, -magnitude, magnitude)


def trivial_augment_wide(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One randomly drawn op at a randomly drawn magnitude (see the module docstring).

    Args:
      image: uint8 [H, W, 3].
      seed: a stateless seed [2] (int32 or int64).

    Returns:
      The augmented uint8 image, same shape.
    """
    op, magnitude = draw(seed)
    branches = [lambda name=name: apply_op(name, image, magnitude) for name in OPS]
    return tf.ensure_shape(tf.switch_case(op, branches), image.shape)
