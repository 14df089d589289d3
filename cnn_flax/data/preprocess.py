"""Per-example TensorFlow image preprocessing: Inception crop, eval centre crop, CIFAR pad-crop.

All randomness is stateless, drawn from a per-example seed (see pipeline.py), so an example's
augmentation is a pure function of (seed, its position in the stream) and resumption is exact.
Outputs are uint8 [size, size, 3]; normalisation happens on the device (mixing.normalize).
"""

from __future__ import annotations

import tensorflow as tf

AREA_RANGE = (0.08, 1.0)
RATIO_RANGE = (3 / 4, 4 / 3)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    # Bilinear interpolation of uint8 pixels stays within [0, 255], so rounding half up by
    # truncation is exact and needs no clipping pass.
    return tf.cast(image + 0.5, tf.uint8)


def resize_uint8(image: tf.Tensor, size: int, *, antialias: bool) -> tf.Tensor:
    """Bilinear resize to [size, size] returning uint8."""
    # TF's bilinear kernel is markedly faster on float32 input than on uint8 input.
    image = tf.cast(image, tf.float32)
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=antialias)
    return _to_uint8(resized)


def _image_shape(image_bytes: tf.Tensor, jpeg_only: bool = False) -> tf.Tensor:
    """[height, width, channels] without decoding pixels where the format allows it (JPEG)."""
    if jpeg_only:
        return tf.image.extract_jpeg_shape(image_bytes)
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.image.extract_jpeg_shape(image_bytes),
        lambda: tf.shape(tf.io.decode_image(image_bytes, channels=3, expand_animations=False)),
    )


def decode_and_crop(
    image_bytes: tf.Tensor, window: tf.Tensor, jpeg_only: bool = False
) -> tf.Tensor:
    """Decodes only `window` = [y, x, h, w] of a JPEG (fused, the expensive part of the pipeline);
    other formats are decoded whole and then cropped. `jpeg_only` skips the format test."""

    def jpeg():
        # INTEGER_FAST IDCT: a little faster, and the difference is far below augmentation noise.
        return tf.io.decode_and_crop_jpeg(
            image_bytes, window, channels=3, dct_method="INTEGER_FAST"
        )

    if jpeg_only:
        return jpeg()

    def other():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def _random_window(shape: tf.Tensor, seed: tf.Tensor, area_range, ratio_range) -> tf.Tensor:
    """Inception crop window [y, x, h, w] (Szegedy et al., 2015): area and aspect ratio sampled
    uniformly in the ranges; the whole image after 10 failed attempts."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def inception_crop(
    image_bytes: tf.Tensor,
    seed: tf.Tensor,
    *,
    image_size: int,
    area_range: tuple[float, float] = AREA_RANGE,
    ratio_range: tuple[float, float] = RATIO_RANGE,
    jpeg_only: bool = False,
) -> tf.Tensor:
    """Random-resized crop fused with JPEG decoding -> uint8 [image_size, image_size, 3].

    Bilinear without antialiasing, as in the reference TF ImageNet pipelines: the crops are
    rarely more than 2x larger than the output, and it is cheaper. `jpeg_only`: every image is a
    JPEG (ImageNet), so the per-image format test is skipped.
    """
    shape = _image_shape(image_bytes, jpeg_only)
    window = _random_window(shape, seed, area_range, ratio_range)
    crop = decode_and_crop(image_bytes, window, jpeg_only)
    return resize_uint8(crop, image_size, antialias=False)


def inception_crop_decoded(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    image_size: int,
    area_range: tuple[float, float] = AREA_RANGE,
    ratio_range: tuple[float, float] = RATIO_RANGE,
) -> tf.Tensor:
    """`inception_crop` for an already decoded uint8 image."""
    w = _random_window(tf.shape(image), seed, area_range, ratio_range)
    crop = tf.image.crop_to_bounding_box(image, w[0], w[1], w[2], w[3])
    return resize_uint8(crop, image_size, antialias=False)


def _center_window(shape: tf.Tensor, crop_ratio: float) -> tf.Tensor:
    height, width = shape[0], shape[1]
    side = tf.cast(tf.round(crop_ratio * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32)
    side = tf.maximum(side, 1)
    return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])


def preprocess_for_eval(
    image_bytes: tf.Tensor, *, image_size: int, crop_ratio: float, jpeg_only: bool = False
) -> tf.Tensor:
    """Centre crop of `crop_ratio` x the shorter side, resized to `image_size` (antialiased).

    Equivalent to torchvision's Resize(image_size / crop_ratio) + CenterCrop(image_size) (0.875:
    256 -> 224) up to interpolation, but the crop is fused with JPEG decoding, so it is cheaper.
    """
    window = _center_window(_image_shape(image_bytes, jpeg_only), crop_ratio)
    crop = decode_and_crop(image_bytes, window, jpeg_only)
    return resize_uint8(crop, image_size, antialias=True)


def preprocess_for_eval_decoded(
    image: tf.Tensor, *, image_size: int, crop_ratio: float
) -> tf.Tensor:
    """`preprocess_for_eval` for an already decoded image (small datasets use crop_ratio 1)."""
    w = _center_window(tf.shape(image), crop_ratio)
    crop = tf.image.crop_to_bounding_box(image, w[0], w[1], w[2], w[3])
    if image.shape[0] == image_size and image.shape[1] == image_size and crop_ratio == 1.0:
        return crop
    return resize_uint8(crop, image_size, antialias=True)


def pad_and_random_crop(image: tf.Tensor, seed: tf.Tensor, *, pad: int = 4) -> tf.Tensor:
    """Zero-pad by `pad` and crop back at a random offset, the CIFAR augmentation of He et al.
    (2016), Sec. 4.2."""
    shape = tf.shape(image)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, shape, seed=seed)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Horizontal flip with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)
