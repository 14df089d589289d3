"""Image operations of AutoAugment / RandAugment in TensorFlow, on uint8 [H, W, 3] images.

Semantics follow PIL's ImageOps / ImageEnhance, which the AutoAugment paper (Cubuk et al., 2019)
used; tests/data/test_augment_ops.py checks them against PIL. The RandAugment/AutoAugment
geometric ops sample the nearest pixel and fill uncovered pixels with grey (128), like the TPU
reference implementation; `affine` is PIL's bilinear transform, for TrivialAugment.
"""

from __future__ import annotations

import math

import tensorflow as tf

FILL = 128


def _float(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32)


def _uint8(image: tf.Tensor) -> tf.Tensor:
    """Clip, then truncate toward zero: PIL's blend and resampling cast floats to UINT8 in C."""
    return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)


def blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """degenerate + factor * (image - degenerate), clipped: PIL ImageEnhance's interpolation
    (factor 1 = the image, 0 = the degenerate image, > 1 extrapolates)."""
    factor = tf.cast(factor, tf.float32)
    return _uint8(_float(degenerate) + factor * (_float(image) - _float(degenerate)))


def _grey(image: tf.Tensor) -> tf.Tensor:
    """PIL's "L" conversion in its fixed point: (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    weights = tf.constant([19595, 38470, 7471], tf.int32)
    grey = tf.reduce_sum(tf.cast(image, tf.int32) * weights, axis=-1, keepdims=True) + 0x8000
    return _float(tf.bitwise.right_shift(grey, 16))


def color(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Saturation: blend with the greyscale image."""
    return blend(tf.broadcast_to(_grey(image), tf.shape(image)), image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blend with a flat image at the mean grey level."""
    mean = tf.round(tf.reduce_mean(_grey(image)))
    return blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blend with black."""
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blend with PIL's SMOOTH-filtered image (3x3 kernel, centre 5, total 13); borders kept."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(_float(image)[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(tf.round(smooth), [[1, 1], [1, 1], [0, 0]])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    inner = tf.pad(tf.ones([height - 2, width - 2, 3], tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(inner, smooth, _float(image))
    return blend(degenerate, image, factor)


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """Invert the pixels at or above `threshold` (0..256, may be fractional; 256 = unchanged)."""
    below = _float(image) < tf.cast(threshold, tf.float32)
    return tf.where(below, image, 255 - image)


def solarize_add(image: tf.Tensor, addition: tf.Tensor, threshold: int = 128) -> tf.Tensor:
    """Add `addition` to the pixels below `threshold` (TPU AutoAugment's SolarizeAdd)."""
    pixels = tf.cast(image, tf.int32)
    added = tf.clip_by_value(pixels + tf.cast(addition, tf.int32), 0, 255)
    return tf.cast(tf.where(pixels < threshold, added, pixels), tf.uint8)


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """Keep the `bits` (1..8) most significant bits of each channel."""
    shift = tf.cast(8 - bits, tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def invert(image: tf.Tensor) -> tf.Tensor:
    return 255 - image


def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """Per channel, stretch [min, max] to [0, 255] (PIL ImageOps.autocontrast, cutoff 0)."""
    pixels = _float(image)
    low = tf.reduce_min(pixels, axis=[0, 1])
    high = tf.reduce_max(pixels, axis=[0, 1])
    scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
    offset = tf.where(high > low, -low * scale, 0.0)
    # PIL builds an integer lookup table by truncation: int(i * scale + offset).
    return tf.cast(tf.clip_by_value(tf.floor(pixels * scale + offset), 0.0, 255.0), tf.uint8)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
    """PIL ImageOps.equalize for one uint8 channel."""
    values = tf.reshape(tf.cast(channel, tf.int32), [-1])
    histogram = tf.math.bincount(values, minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(histogram) - nonzero[-1]) // 255

    def equalized():
        lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        return tf.cast(tf.gather(lut, tf.cast(channel, tf.int32)), tf.uint8)

    return tf.cond(step > 0, equalized, lambda: channel)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """Histogram equalisation of each channel."""
    return tf.stack([_equalize_channel(image[:, :, c]) for c in range(3)], axis=-1)


def _transform(image: tf.Tensor, matrix: list) -> tf.Tensor:
    """Projective transform; `matrix` maps output (x, y) to input coordinates, nearest pixel."""
    shape = tf.shape(image)
    transforms = tf.cast(tf.stack(matrix)[None], tf.float32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transforms,
        output_shape=shape[:2],
        fill_value=tf.constant(FILL, tf.float32),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return out[0]


def rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    """Rotate counter-clockwise about the centre (as PIL's Image.rotate)."""
    theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    # Output pixel (x, y) samples the input at the inverse (clockwise) rotation of (x, y).
    return _transform(
        image,
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0],
    )


def shear_x(image: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
    """Output (x, y) samples input (x + shear * y, y), as PIL's affine transform."""
    s = tf.cast(shear, tf.float32)
    return _transform(image, [1.0, s, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
    s = tf.cast(shear, tf.float32)
    return _transform(image, [1.0, 0.0, 0.0, s, 1.0, 0.0, 0.0, 0.0])


def translate_x(image: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    """Output (x, y) samples input (x + pixels, y): the content moves left by `pixels`."""
    t = tf.cast(pixels, tf.float32)
    return _transform(image, [1.0, 0.0, t, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    t = tf.cast(pixels, tf.float32)
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, t, 0.0, 0.0])


def affine(image: tf.Tensor, matrix, *, fill: float) -> tf.Tensor:
    """PIL's `Image.transform(size, AFFINE, matrix, BILINEAR, fillcolor=fill)` of a uint8 image.

    `matrix` = (a, b, c, d, e, f) maps an output point to the input point (a x + b y + c,
    d x + e y + f) in PIL's continuous coordinates, where pixel (i, j) covers [i, i + 1) and is
    sampled at its centre. As in PIL, an output pixel whose centre maps outside the input takes
    `fill`, and the neighbours of a point inside are clamped at the border: TF's CONSTANT mode
    would instead blend the fill into the edge pixels.
    """
    a, b, c, d, e, f = (tf.cast(v, tf.float32) for v in matrix)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    # TF samples index coordinates (pixel centres on the integers): shift by half a pixel.
    transform = tf.stack([a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5, 0.0, 0.0])
    sampled = tf.raw_ops.ImageProjectiveTransformV3(
        images=_float(image)[None],
        transforms=transform[None],
        output_shape=tf.shape(image)[:2],
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )[0]
    xs = tf.range(tf.cast(width, tf.float32))[None, :] + 0.5
    ys = tf.range(tf.cast(height, tf.float32))[:, None] + 0.5
    u, v = a * xs + b * ys + c, d * xs + e * ys + f
    inside = (u >= 0) & (u < tf.cast(width, tf.float32)) & (v >= 0)
    inside &= v < tf.cast(height, tf.float32)
    return _uint8(tf.where(inside[:, :, None], sampled, float(fill)))
