"""What a checkpoint records about itself, read one way for ``predict``, ``evaluate`` and
fine-tuning alike.

Two kinds of checkpoint record it differently:

* a training workdir (or a step folder inside one): ``model.json`` (model, classes, overrides),
  ``config.json`` (the run's config, hence its evaluation transform) and ``classes.json`` (the
  data set's class names, written when training starts);
* a variables checkpoint (``python -m cnn_flax.convert``): ``model.json`` alone, with the
  published weights' evaluation transform (``preprocessing``) and class names where known.

A reader that needs one of these facts asks :func:`read`, so the three commands cannot drift
apart on, say, which config a workdir holds or where its class names are.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import ml_collections

from cnn_flax import configs
from cnn_flax.data import get_class_names, imagenet_class_names
from cnn_flax.data.eval_transform import Preprocessing
from cnn_flax.models import model_info
from cnn_flax.training.checkpoint import (
    CheckpointError,
    find_model_meta,
    is_variables_checkpoint,
)

CLASSES_FILE = "classes.json"  # a training workdir's class names, written when training starts
CONFIG_FILE = "config.json"  # a training workdir's config, written when training starts


@dataclasses.dataclass(frozen=True)
class Record:
    """What the checkpoint at ``path`` says about its model, inputs and outputs.

    Attributes:
      path: the checkpoint as given.
      workdir: the training workdir it is (or lies in), ``None`` for a variables checkpoint.
      meta: its ``model.json`` (``{}`` when there is none).
      config: the workdir's config (``config.json`` over the base recipe), else ``None``.
      preprocessing: its evaluation transform, ``None`` when it records none.
      class_names: its output classes' names, ``None`` when it records none.
    """

    path: pathlib.Path
    workdir: pathlib.Path | None
    meta: dict
    config: ml_collections.ConfigDict | None
    preprocessing: Preprocessing | None
    class_names: list[str] | None

    @property
    def model(self) -> str | None:
        return self.meta.get("model")

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.meta.get("overrides") or {})


def workdir_of(path: str | pathlib.Path) -> pathlib.Path | None:
    """The training workdir ``path`` is (or a checkpoint of), or ``None`` for anything else."""
    path = pathlib.Path(path).expanduser().resolve()
    if is_variables_checkpoint(path):
        return None
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    return None


def read(path: str | pathlib.Path) -> Record:
    """Reads what the checkpoint (or workdir) at ``path`` records; nothing is required.

    Raises:
      ValueError: a workdir whose ``config.json`` no longer loads, naming the file.
    """
    path = pathlib.Path(path).expanduser()
    try:
        meta = find_model_meta(path)
    except CheckpointError:
        meta = {}
    workdir = workdir_of(path)
    if workdir is None:
        preprocessing = meta.get("preprocessing")
        return Record(
            path=path,
            workdir=None,
            meta=meta,
            config=None,
            preprocessing=Preprocessing.from_json(preprocessing) if preprocessing else None,
            class_names=meta.get("class_names"),
        )
    try:
        config = configs.load(workdir=workdir)
        preprocessing = Preprocessing.from_config(config)
    except ValueError as err:
        raise ValueError(f"{workdir / CONFIG_FILE}: {err}") from None
    classes = workdir / CLASSES_FILE
    names = list(json.loads(classes.read_text())["names"]) if classes.is_file() else None
    return Record(path, workdir, meta, config, preprocessing, names)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What a checkpoint means for its inputs and outputs, the gaps filled with defaults.

    Attributes:
      model: the registry name.
      overrides: model overrides it was built with.
      preprocessing: its evaluation transform.
      class_names: its output classes' names, or ``None`` (indices are printed).
      kept_ema: a training workdir whose run also kept averaged (EMA) weights; predict uses the
        raw ones, as the trainer's "Done" line reports, and says so.
    """

    model: str
    overrides: dict
    preprocessing: Preprocessing
    class_names: list[str] | None
    kept_ema: bool = False


def inputs(checkpoint: str | pathlib.Path, model: str | None = None) -> Inputs:
    """Reads model, preprocessing and class names off a workdir or variables checkpoint, filling
    what it does not record with the model's defaults (its published transform, ImageNet's names
    for a 1000-class head): what ``predict`` and ``export`` feed a checkpoint.

    Args:
      checkpoint: a training workdir (or a step of one) or a variables checkpoint.
      model: the model the caller expects; ``None`` takes the recorded one.

    Raises:
      ValueError: the model is unknown, not recorded and not given, or not the recorded one; or
        a workdir's config no longer loads. The message names the fix.
    """
    record = read(checkpoint)
    name = model or record.model
    if name is None:
        raise ValueError(f"{checkpoint} does not record its model; pass --model=NAME.")
    model_info(name)  # a ValueError naming the registered models
    if record.model not in (None, name):
        raise ValueError(
            f"{checkpoint} holds a {record.model!r} checkpoint, not {name!r}; "
            f"pass --model={record.model} or another checkpoint."
        )
    if record.workdir is not None:
        names = record.class_names or _data_set_class_names(record.config)
        kept_ema = record.config is not None and record.config.get("ema_decay") is not None
        return Inputs(name, record.overrides, record.preprocessing, names, kept_ema)
    preprocessing = record.preprocessing or Preprocessing.for_model(name)
    names = record.class_names
    if names is None and int(record.meta.get("num_classes", 0)) == 1000:
        names = imagenet_class_names()
    return Inputs(name, record.overrides, preprocessing, names)


def _data_set_class_names(config: ml_collections.ConfigDict) -> list[str] | None:
    # Workdirs from before classes.json: ask the data set (cheap for the offline sets).
    try:
        return get_class_names(config.data)
    except Exception:  # noqa: BLE001 - the data set may be gone; indices are the fallback
        return None
