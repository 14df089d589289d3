"""Classify images: ``python -m cnn_flax.predict --checkpoint=DIR [--model=NAME] IMAGE|FOLDER...``.

Prints the top-5 classes of each image with their probabilities and the checkpoint's class names:
a training workdir's data set classes (recorded in ``classes.json`` when training starts: digits
"0".."9", a folder set's sub-folder names), ImageNet's names for 1000-class converted weights,
class indices otherwise. ``--checkpoint`` takes a variables checkpoint
(``python -m cnn_flax.convert``) or a training workdir; ``--model`` may be left out, since both
record their model, and must agree with it when given.

Each image gets the checkpoint's own evaluation preprocessing (read by
:mod:`cnn_flax.training.checkpoint_record`, applied by :mod:`cnn_flax.data.image_files`):

* a training workdir: the run's (``config.json``: image size, eval resize/crop, mean/std), made by
  the training data pipeline's own evaluation transform
  (:func:`cnn_flax.data.preprocess.preprocess_for_eval`), so ``predict`` sees what ``evaluate``
  and training's evaluations saw;
* converted weights: their publisher's, recorded in ``model.json`` (for a file recognised by its
  SHA-256) or else the model's default: torchvision's evaluation transform, reproduced exactly
  with PIL (resize the shorter side, antialiased bilinear or bicubic, centre crop, scale to
  [0, 1], normalise), so converted torchvision weights give torchvision's predictions.

16-bit PNGs are scaled to 8 bits as training decodes them (``x >> 8``, TensorFlow's conversion),
not clipped. Unreadable images are reported on stderr, one line each naming the path; the others
are still classified. Exit status: 0 when every image was classified, 1 when some could not be
read, 2 on a usage error (unknown model, unreadable checkpoint) with nothing classified.
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

from cnn_flax.data.eval_transform import Preprocessing
from cnn_flax.data.image_files import IMAGE_SUFFIXES, ImageError, load_image, load_image_as_trained
from cnn_flax.errors import one_line
from cnn_flax.models import create_model, model_info
from cnn_flax.training import checkpoint_record
from cnn_flax.training.checkpoint import CheckpointError, load_variables


class UsageError(Exception):
    """A mistake in the command's inputs; the message says what is wrong and how to fix it."""


def eval_transform(name: str) -> tuple[int, int, str]:
    """``(resize_size, crop_size, interpolation)`` of model ``name``'s evaluation transform."""
    transform = model_info(name).transform
    return transform.resize, transform.crop, transform.interpolation


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, probabilities)`` of the ``k`` most probable classes per row, best first."""
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1))
    indices = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return indices, np.take_along_axis(probs, indices, axis=-1)


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


def run(
    images: Sequence[str],
    *,
    checkpoint: str | None = None,
    model: str | None = None,
    weights: str | None = None,
    k: int = 5,
    batch_size: int = 32,
) -> int:
    """Classifies ``images`` and prints the top ``k`` of each; returns the exit status.

    ``weights`` (with ``model``) takes a published set's name, file or URL instead of
    ``checkpoint`` (:func:`cnn_flax.weights.load`); the images then get that set's own
    preprocessing.

    Raises:
      UsageError: for an unknown model or an unreadable checkpoint, before any image is read.
    """
    images = expand_images(images)
    if weights is not None:
        inputs, variables = _published_inputs(model, weights)
    else:
        checkpoint_dir = pathlib.Path(checkpoint or "").expanduser()
        inputs, variables = _checkpoint_inputs(checkpoint, model), None
    pre = inputs.preprocessing

    def load(path: str) -> np.ndarray:
        if pre.pipeline == "cnn_flax":
            return load_image_as_trained(path, pre)
        return load_image(
            path,
            resize_size=pre.resize,
            crop_size=pre.crop,
            interpolation=pre.interpolation,
            mean=pre.mean,
            std=pre.std,
        )

    paths, arrays, failed = [], [], 0
    for path in images:
        try:
            arrays.append(load(path))
            paths.append(path)
        except ImageError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    if not arrays:
        return 1

    try:
        variables = variables or load_variables(checkpoint_dir)
    except CheckpointError as err:
        raise UsageError(one_line(err)) from None
    if inputs.kept_ema:  # on stderr: stdout stays the predictions alone
        print(
            "Predicting with the raw weights (the figure the Done line names first); this run "
            "also kept averaged (EMA) weights, which evaluate reports beside them.",
            file=sys.stderr,
        )
    logits = predict(
        inputs.model, variables, np.stack(arrays), overrides=inputs.overrides, batch_size=batch_size
    )
    names = inputs.class_names
    if names is not None and len(names) != logits.shape[-1]:
        names = None  # a record that does not fit the head names nothing
    indices, probs = top_k(logits, min(k, logits.shape[-1]))
    for path, row_indices, row_probs in zip(paths, indices, probs):
        print(path)
        for index, prob in zip(row_indices, row_probs):
            label = names[index] if names else f"class {index}"
            print(f"  {prob:.4f}  {index:>4d}  {label}")
    return 1 if failed else 0


def expand_images(images: Sequence[str]) -> list[str]:
    """``images`` with each folder replaced by the image files in it and its sub-folders (sorted,
    hidden ones left out), so ``predict --checkpoint=W photos/`` classifies a folder of photos.

    Raises:
      UsageError: a folder with no image file in it, naming the folder and the suffixes looked
        for (before any checkpoint is read, so the fix named is the right one).
    """
    expanded = []
    for image in images:
        folder = pathlib.Path(image).expanduser()
        if not folder.is_dir():
            expanded.append(image)
            continue
        found = sorted(
            str(p)
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not found:
            what = "is empty" if not any(folder.iterdir()) else "holds no image file"
            raise UsageError(
                f"folder {image} {what} (looked for {', '.join(IMAGE_SUFFIXES)} in it and its "
                "sub-folders); pass image files or a folder that holds some."
            )
        expanded += found
    return expanded


def _checkpoint_inputs(checkpoint: str | None, model: str | None) -> checkpoint_record.Inputs:
    """What ``--checkpoint`` records, with a missing or empty folder refused first."""
    path = pathlib.Path(checkpoint or "").expanduser()
    if not checkpoint or not path.exists():
        raise UsageError(f"--checkpoint {path} does not exist.")
    if path.is_dir() and not any(path.iterdir()):
        raise UsageError(
            f"--checkpoint {path} is an empty folder: pass a training workdir or "
            "a converted checkpoint (python -m cnn_flax.convert)."
        )
    try:
        return checkpoint_record.inputs(path, model)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _published_inputs(model: str | None, source: str) -> tuple[checkpoint_record.Inputs, dict]:
    from cnn_flax import weights
    from cnn_flax.data.classes import imagenet_class_names

    if not model:
        raise UsageError("--weights needs --model (e.g. --model=resnet50 --weights=DEFAULT).")
    try:
        variables, provenance = weights.load(model, source)
    except (weights.WeightsError, ValueError) as err:
        raise UsageError(one_line(err)) from None
    pre = (
        Preprocessing.from_json(provenance.preprocessing)
        if provenance.preprocessing
        else Preprocessing.for_model(model)
    )
    names = imagenet_class_names()
    return checkpoint_record.Inputs(model, dict(provenance.overrides), pre, names), variables


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
        metavar="DIR",
        help="variables checkpoint (python -m cnn_flax.convert) or training workdir",
    )
    parser.add_argument(
        "--weights",
        metavar="NAME",
        help="instead of --checkpoint: a published set (IMAGENET1K_V2, DEFAULT, timm:...; "
        "`python -m cnn_flax.models --weights MODEL`), a weights file or URL",
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes to print per image")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (JPEG, PNG, ...) or folders of them",
    )
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")
    if (args.checkpoint is None) == (args.weights is None):
        parser.error("give one of --checkpoint=DIR or --model=NAME --weights=NAME_OR_FILE")
    try:
        return run(
            args.images,
            checkpoint=args.checkpoint,
            model=args.model,
            weights=args.weights,
            k=args.top_k,
            batch_size=args.batch_size,
        )
    except UsageError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
