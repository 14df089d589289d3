"""Classify images: ``python -m cnn_flax.predict --model=NAME --checkpoint=DIR IMAGE...``.

Prints the top-5 classes of each image with their probabilities: ImageNet class names for a
1000-class checkpoint, class indices otherwise. ``--checkpoint`` takes a variables checkpoint
(``python -m cnn_flax.convert``) or a training workdir; ``--model`` may be left out when the
checkpoint records its model, and must agree with it when given.

Preprocessing is torchvision's evaluation transform, reproduced exactly so that converted
torchvision weights give torchvision's predictions: resize the shorter side to
``round(resolution / eval_crop_ratio)`` (PIL, antialiased; bilinear, or bicubic where the
model's torchvision weights use it), centre-crop ``resolution`` pixels, scale to [0, 1] and
normalise with the ImageNet mean and std. It is done with PIL rather than with
:func:`cnn_flax.data.preprocess.preprocess_for_eval`, the training pipeline's TensorFlow version,
because that one crops before resizing, decodes JPEGs with a faster inverse DCT and resizes with
TensorFlow's kernel: close, but not torchvision's pixels.

Unreadable images are reported on stderr, one line each naming the path; the other images are
still classified. Exit status: 0 when every image was classified, 1 when some could not be read,
2 on a usage error (unknown model, unreadable checkpoint) with nothing classified.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.checkpoint import CheckpointError, find_model_meta, load_variables
from cnn_flax.models import create_model, model_info
from cnn_flax.models.layers import IMAGENET_MEAN, IMAGENET_STD


class UsageError(Exception):
    """A mistake in the command's inputs; the message says what is wrong and how to fix it."""


class ImageError(Exception):
    """An image file that cannot be read or decoded."""


def eval_transform(name: str) -> tuple[int, int, str]:
    """``(resize_size, crop_size, interpolation)`` of model ``name``'s evaluation transform."""
    transform = model_info(name).transform
    return transform.resize, transform.crop, transform.interpolation


def load_image(
    path: str | pathlib.Path, *, resize_size: int, crop_size: int, interpolation: str = "bilinear"
) -> np.ndarray:
    """An image file as a normalised float32 ``[crop_size, crop_size, 3]`` array.

    Matches ``torchvision.transforms.Compose([Resize(resize_size), CenterCrop(crop_size),
    ToTensor(), Normalize(mean, std)])`` on a PIL image, transposed to HWC: the same output size
    rounding, PIL resampling, crop offsets and float32 arithmetic.

    Raises:
      ImageError: naming the path when the file is missing or not a decodable image.
    """
    from PIL import Image

    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")  # decodes fully, so truncated files fail here
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"cannot read image {path}: {' '.join(str(err).split())}") from None
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
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    return (pixels - mean) / std


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, probabilities)`` of the ``k`` most probable classes per row, best first."""
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1))
    indices = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return indices, np.take_along_axis(probs, indices, axis=-1)


def _resolve_model(model: str | None, checkpoint: pathlib.Path) -> tuple[str, dict]:
    try:
        meta = find_model_meta(checkpoint)
    except CheckpointError:
        meta = {}
    name = model or meta.get("model")
    if name is None:
        raise UsageError(f"{checkpoint} does not record its model; pass --model=NAME.")
    try:
        model_info(name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if meta.get("model") not in (None, name):
        raise UsageError(
            f"{checkpoint} holds a {meta['model']!r} checkpoint, not {name!r}; "
            f"pass --model={meta['model']} or another checkpoint."
        )
    return name, dict(meta.get("overrides") or {})


def predict(
    name: str,
    variables: dict,
    images: np.ndarray,
    *,
    overrides: dict | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """float32 logits of normalised NHWC ``images``, in batches of ``batch_size``.

    Every batch is padded to the same size so the model compiles once.
    """
    num_classes = int(np.shape(variables["params"]["head"]["kernel"])[-1])
    frozen = tuple(sorted((k, _hashable(v)) for k, v in (overrides or {}).items()))
    apply = _jitted_apply(name, num_classes, frozen)
    batch_size = min(batch_size, len(images))
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        pad = batch_size - len(batch)
        if pad:
            batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
        out.append(np.asarray(apply(variables, batch))[: batch_size - pad])
    return np.concatenate(out)


def _hashable(value):
    return tuple(map(_hashable, value)) if isinstance(value, (list, tuple)) else value


@functools.lru_cache(maxsize=8)
def _jitted_apply(name: str, num_classes: int, overrides: tuple) -> Callable:
    # Cached so that repeated calls in one process (tests, notebooks) compile once per model.
    model = create_model(name, num_classes=num_classes, **dict(overrides))
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


def _class_names(num_classes: int) -> list[str] | None:
    if num_classes != 1000:
        return None
    from cnn_flax.data.classes import imagenet_class_names

    return imagenet_class_names()


def run(
    images: Sequence[str],
    *,
    checkpoint: str,
    model: str | None = None,
    k: int = 5,
    batch_size: int = 32,
) -> int:
    """Classifies ``images`` and prints the top ``k`` of each; returns the exit status.

    Raises:
      UsageError: for an unknown model or an unreadable checkpoint, before any image is read.
    """
    checkpoint_dir = pathlib.Path(checkpoint).expanduser()
    if not checkpoint_dir.exists():
        raise UsageError(f"--checkpoint {checkpoint_dir} does not exist.")
    name, overrides = _resolve_model(model, checkpoint_dir)
    resize_size, crop_size, interpolation = eval_transform(name)

    paths, arrays, failed = [], [], 0
    for path in images:
        try:
            arrays.append(
                load_image(
                    path, resize_size=resize_size, crop_size=crop_size, interpolation=interpolation
                )
            )
            paths.append(path)
        except ImageError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    if not arrays:
        return 1

    try:
        variables = load_variables(checkpoint_dir)
    except CheckpointError as err:
        raise UsageError(" ".join(str(err).split())) from None
    logits = predict(name, variables, np.stack(arrays), overrides=overrides, batch_size=batch_size)
    names = _class_names(logits.shape[-1])
    indices, probs = top_k(logits, min(k, logits.shape[-1]))
    for path, row_indices, row_probs in zip(paths, indices, probs):
        print(path)
        for index, prob in zip(row_indices, row_probs):
            label = names[index] if names else f"class {index}"
            print(f"  {prob:.4f}  {index:>4d}  {label}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_flax.predict",
        description="Print the top-5 classes of images with a cnn_flax checkpoint.",
        epilog="Exit status: 0 all images classified; 1 some images unreadable (reported on "
        "stderr, the others still classified); 2 usage error.",
    )
    parser.add_argument("--model", help="model name; default: the one the checkpoint records")
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="variables checkpoint (python -m cnn_flax.convert) or training workdir",
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes to print per image")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")
    try:
        return run(
            args.images,
            checkpoint=args.checkpoint,
            model=args.model,
            k=args.top_k,
            batch_size=args.batch_size,
        )
    except UsageError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
