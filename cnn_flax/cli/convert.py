"""Convert a weights file into a cnn_flax variables checkpoint.

    python -m cnn_flax.convert --model=efficientnet_lite0 --weights=efficientnet-lite0.pth --out=DIR
    python -m cnn_flax.convert --model=resnet50 --weights=https://HOST/resnet50-11ad3fa6.pth --out=D
    python -m cnn_flax.convert --model=resnet50 --torchvision-checkpoint=resnet50.pth --out=DIR

``--weights`` takes a file or URL (downloaded once into ``$CNN_FLAX_CACHE``, default
``~/.cache/cnn_flax/weights``) holding a *state dict*: a ``torch.save`` file (read with
``torch.load(weights_only=True)``, which runs no pickled code; a pickled whole model is refused)
or a ``.safetensors`` file (read without torch). Its naming scheme (torchvision, timm, the
efficientnet-lite-pytorch package's) is detected from the keys, or given with ``--format``;
``--torchvision-checkpoint=FILE`` is ``--weights=FILE --format=torchvision``. Every tensor must be
used exactly once and every shape must be the model's.

The result is read by ``python -m cnn_flax.predict``, ``python -m cnn_flax.evaluate``,
``--config.init_from`` and :func:`cnn_flax.training.checkpoint.load_variables`.
Its ``model.json`` records
the model, the overrides the weights need (GoogLeNet's published weights: ``aux_logits=False``
when the file has no auxiliary heads, and ``transform_input=True``; timm's TensorFlow ports: TF
padding), where the weights came from (``provenance``: file, URL, SHA-256, format, mapping, the
published weight set it is) and, for a file recognised as published weights, their evaluation
``preprocessing``.

Exit status: 0 on success; 2 on a user error (missing file, unknown model, weights that do not
fit the model, existing output), reported as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cnn_flax import weights
from cnn_flax.errors import one_line
from cnn_flax.models import list_models, model_info
from cnn_flax.training.checkpoint import CheckpointError, save_variables


class UsageError(Exception):
    """A mistake in the command's inputs; the message says what is wrong and how to fix it."""


def parse_override(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` with VALUE read as JSON where it parses (``false``, ``3``), else a string.

    Raises:
      UsageError: when ``text`` has no ``=``.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--override {text!r} is not KEY=VALUE, e.g. --override aux_logits=false")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def convert_checkpoint(
    name: str,
    source: str | pathlib.Path,
    out: str | pathlib.Path,
    *,
    format: str | None = None,  # noqa: A002 - the natural name of the argument
    overrides: Mapping[str, Any] | None = None,
    log=print,
) -> dict:
    """Converts the weights at ``source`` (file or URL) and writes a variables checkpoint.

    Args:
      name: cnn_flax model name.
      source: the weights file or URL.
      out: the new checkpoint folder; it must not exist yet (or be empty).
      format: the weights' naming scheme; ``None`` detects it from the keys.
      overrides: model overrides on top of those the weights need.
      log: receives one progress line per step.

    Returns:
      The metadata written to ``model.json``.

    Raises:
      UsageError: with a one-line message for every mistake in the inputs.
    """
    try:
        info = model_info(name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if format == "torchvision" and info.torchvision is None:
        with_tv = [n for n in list_models() if model_info(n).torchvision]
        raise UsageError(
            f"model {name!r} has no torchvision counterpart, so no torchvision weights fit it; "
            f"models that have one: {', '.join(with_tv)}."
        )
    out = pathlib.Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already exists; choose a new folder or delete it first.")

    start = time.perf_counter()
    log(f"Loading {source} ...")
    try:
        variables, provenance = weights.load(name, source, format=format, overrides=overrides)
    except KeyError as err:
        raise UsageError(one_line(err.args[0] if err.args else err)) from None
    except (ValueError, TypeError) as err:  # WeightsError is a ValueError
        raise UsageError(one_line(err)) from None
    log(
        f"Converted {provenance.tensors} tensors ({provenance.format} names, SHA-256 "
        f"{provenance.sha256[:12]}...) to cnn_flax {name!r}"
    )
    if provenance.overrides:
        log(f"Model overrides for these weights: {dict(provenance.overrides)}")
    num_classes = int(variables["params"]["head"]["kernel"].shape[-1])
    meta = {
        "model": name,
        "num_classes": num_classes,
        "overrides": dict(provenance.overrides),
        "source": provenance.url or provenance.file,
        "torchvision": info.torchvision,
        "provenance": provenance.to_json(),
    }
    if provenance.preprocessing:
        meta["preprocessing"] = dict(provenance.preprocessing)
    log(f"Writing {out} ...")
    try:
        save_variables(out, variables, meta=meta)
    except CheckpointError as err:
        raise UsageError(one_line(err)) from None
    log(f"Done in {time.perf_counter() - start:.1f} s: {name}, {num_classes} classes -> {out}")
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_flax.convert",
        description="Convert a weights file (torchvision, timm, efficientnet-lite-pytorch; .pth "
        "or .safetensors; a path or URL) into a cnn_flax variables checkpoint.",
    )
    parser.add_argument("--model", required=True, help="cnn_flax model name, e.g. resnet50")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights", metavar="FILE_OR_URL", help="state dict: torch.save file or .safetensors"
    )
    source.add_argument(
        "--torchvision-checkpoint",
        metavar="FILE",
        help="the same as --weights=FILE --format=torchvision",
    )
    parser.add_argument(
        "--format",
        default=None,
        help="naming scheme of the weights (torchvision, timm, efficientnet_lite_pytorch); "
        "default: detected from the keys",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="new checkpoint folder")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model override the weights need, e.g. padding=tf_same (repeatable)",
    )
    args = parser.parse_args(argv)
    fmt = "torchvision" if args.torchvision_checkpoint else args.format
    try:
        overrides = dict(parse_override(o) for o in args.override)
        convert_checkpoint(
            args.model,
            args.weights or args.torchvision_checkpoint,
            args.out,
            format=fmt,
            overrides=overrides,
        )
    except UsageError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
