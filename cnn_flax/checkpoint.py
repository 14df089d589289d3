"""Orbax checkpoints: model-variable checkpoints and (below) the training CheckpointManager.

A *variables checkpoint* is what ``python -m cnn_flax.convert`` writes and what ``evaluate`` and
``predict`` read: a folder holding

  variables/   an Orbax pytree ``{"params": ..., "batch_stats": ...}`` (float32)
  model.json   ``{"model": <registry name>, "num_classes": int, ...}``

:func:`load_variables` also accepts a training workdir or one of its checkpoints, so every command
takes weights from either source.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

VARIABLES_ITEM = "variables"
MODEL_META = "model.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


def save_variables(directory: str | pathlib.Path, variables: Any, *, meta: dict) -> pathlib.Path:
    """Writes a variables checkpoint; refuses to overwrite an existing one.

    Args:
      directory: output folder (created).
      variables: ``{"params": ..., "batch_stats": ...}``.
      meta: at least ``{"model": name, "num_classes": n}``; saved as ``model.json``.
    """
    directory = pathlib.Path(directory).resolve()
    if (directory / VARIABLES_ITEM).exists():
        raise CheckpointError(
            f"{directory} already holds a checkpoint; choose another --out or delete it first."
        )
    for key in ("model", "num_classes"):
        if key not in meta:
            raise CheckpointError(f"checkpoint metadata needs {key!r}, got {sorted(meta)}")
    directory.mkdir(parents=True, exist_ok=True)
    variables = jax.tree.map(np.asarray, variables)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / VARIABLES_ITEM, variables)
    (directory / MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def is_variables_checkpoint(directory: str | pathlib.Path) -> bool:
    directory = pathlib.Path(directory)
    return (directory / VARIABLES_ITEM).is_dir() and (directory / MODEL_META).is_file()


def read_meta(directory: str | pathlib.Path) -> dict:
    """``model.json`` of a variables checkpoint."""
    path = pathlib.Path(directory) / MODEL_META
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"Cannot read checkpoint metadata {path}: {err}") from None


def load_variables(directory: str | pathlib.Path) -> dict:
    """Loads ``{"params", "batch_stats"}`` (numpy, on the host) from a variables checkpoint.

    Raises:
      CheckpointError: naming the path when it holds no readable checkpoint.
    """
    directory = pathlib.Path(directory).resolve()
    if not is_variables_checkpoint(directory):
        raise CheckpointError(
            f"{directory} is not a cnn_flax variables checkpoint (expected {VARIABLES_ITEM}/ and "
            f"{MODEL_META} inside). Write one with `python -m cnn_flax.convert` or pass a "
            f"training workdir."
        )
    try:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(directory / VARIABLES_ITEM)
    except Exception as err:  # orbax raises many types; the user needs the path and the cause.
        raise CheckpointError(f"Cannot read checkpoint {directory}: {err}") from None
