"""Image files as a model's evaluation input, read the way its weights expect.

Two readers, one per kind of checkpoint (:class:`cnn_flax.data.eval_transform.Preprocessing`
says which): :func:`load_image` reproduces torchvision's evaluation transform with PIL, for
converted weights; :func:`load_image_as_trained` runs the training pipeline's own TensorFlow
evaluation transform, for a checkpoint cnn_flax trained. ``predict`` classifies with them and
``export`` checks and calibrates its artifacts on them, so both see the same pixels.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Sequence

import numpy as np

from cnn_flax.data.eval_transform import Preprocessing
from cnn_flax.errors import one_line
from cnn_flax.models.layers import IMAGENET_MEAN, IMAGENET_STD

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# What a folder of photos is searched for (predict's folders, export's calibration photos).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageError(Exception):
    """An image file that cannot be read or decoded."""


def open_rgb(path: str | pathlib.Path):
    """An image file as an 8-bit RGB PIL image, decoded fully (truncated files fail here).

    16-bit greyscale PNGs (PIL modes ``I;16*``/``I``) are scaled to 8 bits by ``x >> 8``, as
    TensorFlow's decoder (the training pipeline's) converts them; ``Image.convert("RGB")`` would
    clip every value above 255 to white. 16-bit RGB PNGs PIL already reads that way.

    Raises:
      ImageError: naming the path when the file is missing or not a decodable image.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT:
                pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
                return Image.fromarray(pixels.astype(np.uint8), mode="L").convert("RGB")
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"cannot read image {path}: {one_line(err)}") from None


def load_image(
    path: str | pathlib.Path,
    *,
    resize_size: int,
    crop_size: int,
    interpolation: str = "bilinear",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """An image file as a normalised float32 ``[crop_size, crop_size, 3]`` array.

    Matches ``torchvision.transforms.Compose([Resize(resize_size), CenterCrop(crop_size),
    ToTensor(), Normalize(mean, std)])`` on a PIL image, transposed to HWC: the same output size
    rounding, PIL resampling, crop offsets and float32 arithmetic. ``mean``/``std`` are on the
    [0, 1] scale.

    Raises:
      ImageError: naming the path when the file is missing or not a decodable image.
    """
    from PIL import Image

    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    image = open_rgb(path)
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_short, new_long = resize_size, int(resize_size * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    if size != image.size:
        image = image.resize(size, resample[interpolation])
    if min(size) < crop_size:
        raise ImageError(f"cannot crop {crop_size} pixels from {path} resized to {size}")
    top = int(round((size[1] - crop_size) / 2.0))
    left = int(round((size[0] - crop_size) / 2.0))
    image = image.crop((left, top, left + crop_size, top + crop_size))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
    return (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _without_tf_frames(message: str) -> str:
    """TensorFlow's op error without its ``{{function_node ...}}`` and ``[Op:...]`` decorations."""
    message = re.sub(r"\{\{.*?\}\}", "", message)
    message = re.sub(r"\[Op:.*$", "", message, flags=re.DOTALL)
    return " ".join(message.split())


def load_image_as_trained(path: str | pathlib.Path, preprocessing: Preprocessing) -> np.ndarray:
    """An image file through the training data pipeline's evaluation transform, normalised.

    The bytes go through :func:`cnn_flax.data.preprocess.preprocess_for_eval` (TensorFlow's
    decoder, centre crop of ``crop / resize`` of the shorter side, antialiased bilinear resize)
    and the eval step's normalisation, so the model sees what ``evaluate`` shows it.

    Raises:
      ImageError: naming the path when the file is missing or not a decodable image.
    """
    import tensorflow as tf

    from cnn_flax.data.preprocess import preprocess_for_eval

    try:
        data = pathlib.Path(path).read_bytes()
        pixels = preprocess_for_eval(
            tf.constant(data),
            image_size=preprocessing.crop,
            crop_ratio=preprocessing.crop_ratio,
        ).numpy()
    except (OSError, tf.errors.OpError) as err:
        message = _without_tf_frames(getattr(err, "message", str(err)))
        raise ImageError(f"cannot read image {path}: {message}") from None
    mean = np.asarray(preprocessing.mean, np.float32) * np.float32(255)
    std = np.asarray(preprocessing.std, np.float32) * np.float32(255)
    return (pixels.astype(np.float32) - mean) / std
