"""Convert a torchvision weights file into a cnn_flax variables checkpoint.

    python -m cnn_flax.convert --model=resnet50 --torchvision-checkpoint=resnet50.pth --out=DIR

The file must hold a *state dict*, as written by ``torch.save(model.state_dict(), path)`` or
downloaded by torchvision into ``~/.cache/torch/hub/checkpoints/``. It is read with
``torch.load(weights_only=True)``, which runs no pickled code; a pickled whole model is refused.
The result is read by ``python -m cnn_flax.predict``, ``python -m cnn_flax.evaluate`` and
:func:`cnn_flax.checkpoint.load_variables`. Its ``model.json`` records the model overrides the
weights need (GoogLeNet's published weights: ``aux_logits=False`` when the file has no auxiliary
heads, and ``transform_input=True``), so the readers build the matching model.

Exit status: 0 on success; 2 on a user error (missing file, unknown model, weights that do not
fit the model, existing output), reported as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import pickle
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cnn_flax.checkpoint import CheckpointError, save_variables
from cnn_flax.convert import from_torchvision
from cnn_flax.models import list_models, model_info
from cnn_flax.weights import model_overrides


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


def load_state_dict(path: pathlib.Path) -> dict[str, Any]:
    """Reads a torch state dict safely (``weights_only=True``).

    Raises:
      UsageError: the file is missing, unreadable, or holds something other than a state dict.
    """
    try:
        import torch
    except ImportError:
        raise UsageError(
            "reading torchvision checkpoints needs torch; install it with "
            "`pip install 'cnn_flax[torch]'`."
        ) from None
    if not path.is_file():
        raise UsageError(f"--torchvision-checkpoint {path} does not exist or is not a file.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise UsageError(
                f"{path} is not a plain state dict: it pickles a {found.group(1)} object (a whole "
                "model?), which torch.load(weights_only=True) refuses to run. Save "
                "`model.state_dict()` with torch.save and convert that file."
            ) from None
        raise UsageError(_unreadable(path, err)) from None
    except Exception as err:  # torch raises RuntimeError, KeyError, EOFError... for bad files.
        raise UsageError(_unreadable(path, err)) from None
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        what = f"a dict with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, Mapping) else ""
        raise UsageError(
            f"{path} holds {what or type(obj).__name__}, not a state dict of tensors. If the "
            "weights sit under one key (e.g. 'state_dict' or 'model'), save that entry alone."
        )
    return dict(obj)


def convert_checkpoint(
    name: str,
    checkpoint: str | pathlib.Path,
    out: str | pathlib.Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    log=print,
) -> dict:
    """Converts the torchvision state dict in ``checkpoint`` and writes a variables checkpoint.

    Args:
      name: cnn_flax model name (its registry entry must name a torchvision model).
      checkpoint: the torch state-dict file.
      out: the new checkpoint folder; it must not exist yet (or be empty).
      overrides: model overrides on top of those the family reads off the weights.
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
    if info.torchvision is None:
        with_tv = [n for n in list_models() if model_info(n).torchvision]
        raise UsageError(
            f"model {name!r} has no torchvision counterpart, so no torchvision weights fit it; "
            f"models that have one: {', '.join(with_tv)}."
        )
    checkpoint = pathlib.Path(checkpoint).expanduser().resolve()
    out = pathlib.Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already exists; choose a new folder or delete it first.")
    if not checkpoint.is_file():
        raise UsageError(f"--torchvision-checkpoint {checkpoint} does not exist or is not a file.")

    start = time.perf_counter()
    log(f"Loading {checkpoint} ...")
    state_dict = load_state_dict(checkpoint)
    log(f"Converting {len(state_dict)} tensors to cnn_flax {name!r} ...")
    try:
        variables = from_torchvision(name, state_dict, **(overrides or {}))
    except KeyError as err:
        raise UsageError(_one_line(err.args[0] if err.args else err)) from None
    except (ValueError, TypeError) as err:
        raise UsageError(_one_line(err)) from None
    # The file is taken to hold the default published weights: their overrides (GoogLeNet's
    # transform_input), then what the weights show, then the user's --override.
    published = info.default_weights("torchvision")
    overrides = {
        **(published.overrides if published else {}),
        **model_overrides(name, variables, overrides),
    }
    if overrides:
        log(f"Model overrides for these weights: {overrides}")
    num_classes = int(variables["params"]["head"]["kernel"].shape[-1])
    meta = {
        "model": name,
        "num_classes": num_classes,
        "overrides": overrides,
        "source": str(checkpoint),
        "torchvision": info.torchvision,
    }
    log(f"Writing {out} ...")
    try:
        save_variables(out, variables, meta=meta)
    except CheckpointError as err:
        raise UsageError(_one_line(err)) from None
    log(f"Done in {time.perf_counter() - start:.1f} s: {name}, {num_classes} classes -> {out}")
    return meta


def _unreadable(path: pathlib.Path, err: Exception) -> str:
    return (
        f"cannot read {path} with torch.load ({type(err).__name__}: {_one_line(err)[:200]}); "
        "is it a file written by torch.save?"
    )


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_flax.convert",
        description="Convert a torchvision state-dict file into a cnn_flax variables checkpoint.",
    )
    parser.add_argument("--model", required=True, help="cnn_flax model name, e.g. resnet50")
    parser.add_argument(
        "--torchvision-checkpoint",
        required=True,
        metavar="FILE",
        help="torch.save'd state dict (.pth) of the matching torchvision model",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="new checkpoint folder")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model override the weights need, e.g. transform_input=false (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_override(o) for o in args.override)
        convert_checkpoint(args.model, args.torchvision_checkpoint, args.out, overrides=overrides)
    except UsageError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
