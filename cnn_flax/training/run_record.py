"""A workdir's record of its config is append-only.

``config.json`` is the config the workdir trains with now (what ``evaluate`` reads).
A rerun on a workdir that has already trained must use the same config: a changed override would
otherwise resume with another schedule or model while ``config.json`` forgot the first one. It
is refused unless the caller allows it (``--config_change=allow``); then every config the workdir
has trained with is kept, in order, in ``config_history.jsonl``, one line each with the step it
took effect at.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import ml_collections

from cnn_flax.training.run_plan import Origin

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"


class ConfigChangeError(ValueError):
    """A rerun's config differs from the one its workdir trained with."""


def config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``config`` as ``config.json`` stores it (tuples become lists)."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every dotted key whose value differs."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes += differences(a, b, prefix=f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return changes


@dataclasses.dataclass(frozen=True)
class ConfigChange:
    """An allowed change of a workdir's config, to :func:`record` once the run goes on."""

    step: int
    old: dict[str, Any]
    new: dict[str, Any]
    changes: list[str]


def check(
    workdir: pathlib.Path,
    config: ml_collections.ConfigDict,
    *,
    step: int,
    allow_change: bool,
) -> ConfigChange | None:
    """Compares ``config`` with the workdir's ``config.json`` before a (re)start at ``step``.

    Writes nothing, so that it can run before the (long) restore.

    Returns:
      The allowed change, or ``None`` when there is none (or nothing has been trained yet).

    Raises:
      ConfigChangeError: the config changed after ``step`` > 0 updates and ``allow_change`` is
        off.
    """
    path = workdir / CONFIG_FILE
    if step == 0 or not path.is_file():
        return None  # nothing trained with the old config yet: no record to keep
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    new = config_dict(config)
    changes = differences(old, new)
    if not changes:
        return None
    if not allow_change:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if changes[3:] else "")
        raise ConfigChangeError(
            f"--workdir {workdir} trained {step} steps with another config ({shown}). Rerun "
            "without the change to resume, pass --config_change=allow to go on with the new "
            f"config (recorded in {HISTORY_FILE}), or pass a new --workdir."
        )
    return ConfigChange(step=step, old=old, new=new, changes=changes)


def record(workdir: pathlib.Path, change: ConfigChange | None) -> None:
    """Appends an allowed change to ``config_history.jsonl`` (the old config first when the
    history has no entry yet) and says so; ``config.json`` is then rewritten by the caller."""
    if change is None:
        return
    history = workdir / HISTORY_FILE
    with history.open("a") as file:
        if not history.stat().st_size:
            file.write(json.dumps({"step": 0, "config": change.old}, sort_keys=True) + "\n")
        entry = {"step": change.step, "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        entry.update(changes=change.changes, config=change.new)
        file.write(json.dumps(entry, sort_keys=True) + "\n")
    print(
        f"Config changed at step {change.step} (recorded in {history}): "
        + "; ".join(change.changes),
        flush=True,
    )


def batch_origin(workdir: pathlib.Path, change: ConfigChange | None) -> Origin:
    """Updates done and images seen when the workdir's latest config (``change``'s, if one is
    about to be recorded) took effect, from ``config_history.jsonl``: each config trained from
    its entry's step to the next one's with its own ``batch_size``. ``Origin()`` without a
    history."""
    entries = []
    history = workdir / HISTORY_FILE
    if history.is_file():
        for line in history.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                entries.append((int(entry["step"]), entry["config"].get("batch_size")))
    if change is not None:
        if not entries:
            entries.append((0, change.old.get("batch_size")))
        entries.append((change.step, change.new.get("batch_size")))
    images, (step, batch) = 0, (entries[0] if entries else (0, None))
    for next_step, next_batch in entries[1:]:
        images += (next_step - step) * int(batch or 0)
        step, batch = next_step, next_batch
    return Origin(updates=step, images=images)
