"""Images an export is checked and calibrated on: a folder's photos or seeded noise, as uint8.

Both the float check and int8 calibration start from uint8 NHWC pixels at the model's resolution,
so an export with and one without ``--with-preprocessing`` are checked on the same pictures: the
first gets the pixels, the second the pixels normalised with the model's own mean and std.
"""

from __future__ import annotations

import pathlib

import numpy as np

from cnn_flax.data.eval_transform import Preprocessing
from cnn_flax.data.image_files import IMAGE_SUFFIXES, load_image


def folder_images(folder: pathlib.Path) -> list[pathlib.Path]:
    """The image files directly in ``folder`` or its sub-folders, sorted (a class-folder tree or a
    flat folder both work)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def split_held_out(paths: list[pathlib.Path]) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """``(calibration, held_out)``: every fifth image (at least one) is held out for the check, so
    the int8 model's agreement is measured on images it was not calibrated on."""
    held = paths[4::5] or paths[-1:]
    return [p for p in paths if p not in held], held


def load_uint8(paths: list[pathlib.Path], preprocessing: Preprocessing) -> np.ndarray:
    """``[len(paths), crop, crop, 3]`` uint8: the model's evaluation resize and centre crop, not
    normalised (the same geometry as ``predict``; :func:`cnn_flax.data.image_files.load_image`
    with a unit normalisation on the 0..255 scale)."""
    p = preprocessing
    arrays = [
        load_image(
            path,
            resize_size=p.resize,
            crop_size=p.crop,
            interpolation=p.interpolation,
            mean=(0.0, 0.0, 0.0),
            std=(1 / 255, 1 / 255, 1 / 255),
        )
        for path in paths
    ]
    return np.clip(np.rint(np.stack(arrays)), 0, 255).astype(np.uint8)


def noise_uint8(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Seeded uniform noise images: the check's inputs when no photos are given. Noise reaches
    every pixel value, which is what a logit comparison needs; agreement of classes on noise
    means little, so int8 export always takes photos."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def normalise(pixels: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """uint8 pixels to the model's float32 input, ``(x / 255 - mean) / std``."""
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    return (pixels.astype(np.float32) / np.float32(255) - mean) / std


def batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``images`` in fixed-size batches, the last one filled up by repeating from the start (an
    exported model takes exactly ``batch_size`` images)."""
    count = -(-len(images) // batch_size) * batch_size
    filled = images[np.arange(count) % len(images)]
    return [filled[i : i + batch_size] for i in range(0, count, batch_size)]
