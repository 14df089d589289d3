"""Orbax checkpoints: model-variable checkpoints and (below) the training CheckpointManager.

A *variables checkpoint* is what ``python -m cnn_flax.convert`` writes and what ``evaluate`` and
``predict`` read: a folder holding

  variables/   an Orbax pytree ``{"params": ..., "batch_stats": ...}`` (float32)
  model.json   ``{"model": <registry name>, "num_classes": int, ...}``

:func:`load_variables` also accepts a training workdir or one of its checkpoints, so every command
takes weights from either source.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from cnn_flax.trees import shape_differences

VARIABLES_ITEM = "variables"
MODEL_META = "model.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model.

    Attributes:
      reason: the cause in a few words (for a list of skipped checkpoints).
    """

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class MismatchError(CheckpointError):
    """A readable checkpoint of another model or config (its tree or shapes differ)."""


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
    variables = jax.tree.map(np.asarray, variables)
    # Written beside, then renamed: a write that fails half-way (a full disk) leaves no partial
    # folder that would block the rerun.
    partial = directory.with_name(f".{directory.name}.partial-{os.getpid()}")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(partial / VARIABLES_ITEM, variables)
        (partial / MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        partial.rename(directory)  # onto nothing or an empty folder
    except Exception as err:
        shutil.rmtree(partial, ignore_errors=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _first_line(err)
        raise CheckpointError(
            f"Cannot write checkpoint {directory}: {reason}. Nothing was left there; free space "
            "(or fix the permissions) and rerun."
        ) from None
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


def load_variables(directory: str | pathlib.Path, *, ema: bool = False) -> dict:
    """Loads ``{"params", "batch_stats"}`` (numpy, on the host) from any checkpoint.

    Accepts a variables checkpoint (``python -m cnn_flax.convert``), a training workdir (its
    latest checkpoint), its ``checkpoints/`` folder, or one step folder inside it.

    Args:
      directory: one of the above.
      ema: take the exponential-moving-average weights of a training checkpoint instead of the
        raw ones.

    Raises:
      CheckpointError: naming the path when it holds no readable checkpoint, or when ``ema`` is
        asked of a checkpoint without EMA weights.
    """
    directory = pathlib.Path(directory).resolve()
    if is_variables_checkpoint(directory):
        if ema:
            raise CheckpointError(
                f"{directory} is a variables checkpoint and holds no separate EMA weights; "
                "drop --ema or pass a training workdir trained with config.ema_decay set."
            )
        try:
            with ocp.StandardCheckpointer() as ckptr:
                return ckptr.restore(directory / VARIABLES_ITEM)
        except Exception as err:  # orbax raises many types; the user needs the path and cause.
            raise CheckpointError(
                f"Cannot read checkpoint {directory}: {_first_line(err)}"
            ) from None
    step_dir = training_step_dir(directory)
    if step_dir is None:
        raise CheckpointError(
            f"{directory} is neither a cnn_flax variables checkpoint (expected {VARIABLES_ITEM}/ "
            f"and {MODEL_META} inside) nor a training workdir with checkpoints in "
            f"{CHECKPOINTS_DIR}/. Write one with `python -m cnn_flax.convert` or "
            "`python -m cnn_flax.train`."
        )
    try:
        with ocp.StandardCheckpointer() as ckptr:
            state = ckptr.restore(step_dir / STATE_ITEM)
    except Exception as err:
        raise CheckpointError(
            f"Cannot read training checkpoint {step_dir}: {_first_line(err)}. Pass an earlier "
            f"step folder (--checkpoint={step_dir.parent}/<step>) if the run kept one."
        ) from None
    params = state.get("ema_params") if ema else state.get("params")
    if params is None:
        raise CheckpointError(
            f"{step_dir} holds no EMA weights (the run had config.ema_decay=None); drop --ema."
        )
    to_host = lambda tree: jax.tree.map(np.asarray, tree)
    stats = state.get("batch_stats") or {}
    if ema and state.get("ema_batch_stats") is not None:  # the run averaged them too
        stats = state["ema_batch_stats"]
    return {"params": to_host(params), "batch_stats": to_host(stats)}


# --- training checkpoints -------------------------------------------------------------------------

CHECKPOINTS_DIR = "checkpoints"
UNRESTORABLE_SUFFIX = ".unrestorable"  # a step folder that failed to restore, set aside
STATE_ITEM = "state"


def _step_dirs(checkpoints: pathlib.Path) -> list[pathlib.Path]:
    if not checkpoints.is_dir():
        return []
    steps = [p for p in checkpoints.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted((p for p in steps if (p / STATE_ITEM).is_dir()), key=lambda p: int(p.name))


def training_step_dir(directory: str | pathlib.Path) -> pathlib.Path | None:
    """The step folder that ``directory`` designates (latest when a workdir), or ``None``."""
    directory = pathlib.Path(directory)
    if (directory / STATE_ITEM).is_dir():
        return directory
    for candidate in (directory / CHECKPOINTS_DIR, directory):
        steps = _step_dirs(candidate)
        if steps:
            return steps[-1]
    return None


def find_model_meta(directory: str | pathlib.Path) -> dict:
    """``model.json`` of a variables checkpoint or of the training workdir around a checkpoint."""
    directory = pathlib.Path(directory).resolve()
    for candidate in (directory, directory.parent, directory.parent.parent):
        if (candidate / MODEL_META).is_file():
            return read_meta(candidate)
    raise CheckpointError(
        f"No {MODEL_META} found in or above {directory}; is it a cnn_flax checkpoint or workdir?"
    )


class CheckpointManager:
    """Training checkpoints of one workdir, on top of Orbax's ``CheckpointManager``.

    * Saves are asynchronous: the state is copied to host memory, then written in a background
      thread while training goes on.
    * Keeps the last ``keep`` checkpoints plus, when ``keep_best``, the one with the best eval
      metric (``best_metric``, higher is better).
    * :meth:`restore_newest` resumes from the newest checkpoint that restores. Orbax writes each
      step to a temporary folder and renames it when complete, so a run killed mid-save leaves
      the previous checkpoint intact.

    Args:
      workdir: the training workdir; checkpoints go to ``workdir/checkpoints/<step>/``.
      keep: last checkpoints to keep.
      keep_best: also keep the best one by ``best_metric``.
      best_metric: key of the metrics dict given to :meth:`save`.
      async_save: write in the background (off in some tests for determinism of timing).
    """

    def __init__(
        self,
        workdir: str | pathlib.Path,
        *,
        keep: int,
        keep_best: bool,
        best_metric: str = "eval_top1",
        async_save: bool = True,
    ):
        from orbax.checkpoint import checkpoint_managers as policies

        if keep < 1:
            raise CheckpointError(f"keep_checkpoints={keep} must be at least 1.")
        self.directory = pathlib.Path(workdir).resolve() / CHECKPOINTS_DIR
        self.best_metric = best_metric
        preserve = [policies.LatestN(n=keep)]
        if keep_best:
            preserve.append(
                policies.BestN(
                    get_metric_fn=lambda m: float(m[best_metric]),
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(preserve),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, *, metrics: dict | None = None) -> bool:
        """Starts saving ``state`` as ``step`` (returns once the state is in host memory).

        Raises:
          CheckpointError: this or an earlier background save failed (e.g. a full disk).
        """
        metrics = None if metrics is None or self.best_metric not in metrics else metrics
        with self._write_errors():
            return self._manager.save(
                step,
                args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state)}),
                metrics=metrics,
                force=True,
            )

    @contextlib.contextmanager
    def _write_errors(self) -> Iterator[None]:
        """A failed write (full disk, quota, permissions) as one line; the error Orbax raises
        carries the TensorStore spec of the array it was writing."""
        try:
            yield
        except Exception as err:
            text = str(err)
            reason = "no space left on device" if "RESOURCE_EXHAUSTED" in text else None
            if isinstance(err, OSError) and err.strerror:
                reason = err.strerror
            raise CheckpointError(
                f"Cannot write a checkpoint in {self.directory}: {reason or _first_line(err)}. "
                "Free space (or fix the permissions) and rerun the same command: it resumes from "
                "the last complete checkpoint."
            ) from None

    def restore(self, step: int, abstract_state: Any) -> Any:
        """Restores ``step`` onto the shardings of ``abstract_state`` (``ShapeDtypeStruct`` leaves).

        Raises:
          CheckpointError: the checkpoint is unreadable or does not match the state's structure
            or shapes (e.g. another model or config); nothing is changed on disk.
        """
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract_state)}),
            )
            state = restored[STATE_ITEM]
        except Exception as err:
            where = self.directory / str(step)
            if _is_structure_mismatch(err):
                raise MismatchError(
                    f"Checkpoint {where} does not match this model/config ({_first_line(err)}). "
                    "Use the config it was trained with, or train in a fresh --workdir. "
                    "Nothing was overwritten."
                ) from None
            reason = _first_line(err)
            raise CheckpointError(
                f"Cannot resume from checkpoint {where}: it is unreadable ({reason}). Nothing was "
                "overwritten.",
                reason=reason,
            ) from None
        _check_shapes(state, abstract_state, self.directory / str(step))
        return state

    def restore_newest(self, abstract_state: Any) -> tuple[int, Any, list[str]]:
        """Restores the newest checkpoint that restores, falling back to older ones.

        A checkpoint can be complete on disk and still unreadable (a disk error, a file damaged
        or deleted by hand); the ones before it usually are intact, and losing a few steps beats
        losing the run. A checkpoint of another model or config fails the same way at every
        step, so that error is raised as is.

        Returns:
          ``(step, state, skipped)``: ``skipped`` says, newest first, which later checkpoints
          were passed over and why.

        Raises:
          CheckpointError: no checkpoint restores (each one's reason given), or they are of
            another model or config (:class:`MismatchError`); nothing is changed.
        """
        skipped: list[str] = []
        failed: list[int] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state = self.restore(step, abstract_state)
            except CheckpointError as err:
                if isinstance(err, MismatchError):
                    raise
                failed.append(step)
                skipped.append(f"step {step}: {err.reason}")
                continue
            skipped = [self._set_aside(bad, why) for bad, why in zip(failed, skipped, strict=True)]
            return step, state, skipped
        if not skipped:
            raise CheckpointError(f"No checkpoint in {self.directory} to resume from.")
        raise CheckpointError(
            f"Cannot resume: no checkpoint in {self.directory} restores ({'; '.join(skipped)}). "
            "Nothing was overwritten; move the workdir aside and train in a fresh --workdir."
        )

    def _set_aside(self, step: int, why: str) -> str:
        """Renames an unrestorable step folder (kept for inspection, not deleted) so that the
        resumed run can write that step again; returns ``why`` saying where it went."""
        aside = self.directory / f"{step}{UNRESTORABLE_SUFFIX}"
        if jax.process_index() == 0:
            (self.directory / str(step)).rename(aside)
        self._manager.reload()
        return f"{why} (moved to {aside})"

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk (raises as :meth:`save`)."""
        with self._write_errors():
            self._manager.wait_until_finished()

    def close(self) -> None:
        with self._write_errors():
            try:
                self._manager.wait_until_finished()
            finally:
                self._manager.close()


def silence_background_write_errors() -> None:
    """Drops the ERROR records Orbax's background threads log for a failed write.

    Each failure is logged, with its traceback, by every thread it passes through (four times
    for one full disk), then raised in the main thread, where :class:`CheckpointManager` turns
    it into one line. Command-line entry points call this; library users keep the logs.
    """
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _OrbaxThreadErrors) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxThreadErrors())


class _OrbaxThreadErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        in_orbax = f"{os.sep}orbax{os.sep}" in record.pathname
        return not (in_orbax and record.levelno >= logging.ERROR)


def _first_line(err: Exception) -> str:
    """The error's first line, short: Orbax and TensorStore append pages of spec to the cause."""
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    line = line.split("; spec=")[0].split(" [source locations=")[0].split(" Truncating/padding")[0]
    return line[:240] + (" ..." if len(line) > 240 else "")


def _is_structure_mismatch(err: Exception) -> bool:
    # Orbax says so when the saved tree's keys differ from the requested one's.
    text = str(err)
    return (
        isinstance(err, (KeyError, TypeError))
        or "tree structure" in text.lower()
        or "stored shape" in text
        or ("Missing" in text and "keys" in text)
    )


def _check_shapes(state: Any, abstract_state: Any, where: pathlib.Path) -> None:
    # Orbax may silently pad or truncate arrays of another shape; refuse that explicitly.
    got = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), state)
    want = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), abstract_state)
    if got != want:
        differences = "; ".join(shape_differences(abstract_state, state)) or "array dtypes differ"
        raise MismatchError(
            f"Checkpoint {where} does not match this model/config ({differences}). Train in a "
            "fresh --workdir, or use the config it was trained with."
        )
