"""Fine-tuning: a run's first state from pretrained weights (``config.init_from``).

The trainer asks this module for the state of a run that starts (not of one that resumes: that
comes from its own checkpoint, so resume is exact as for any run). :func:`initial_state`

* initialises the model as usual, then, with ``config.init_from`` set, replaces every parameter and
  BatchNorm statistic with the loaded one: the backbone always, the classifier (the ``head``
  subtree every model has) when its class count is the data set's (unless
  ``finetune.reset_head``); a new classifier starts at zero, as Big Transfer's does (Kolesnikov
  et al. 2020): the first logits are all equal, the loss starts at log(classes), and the random
  classifier's large first logits (a 10-way head drawn at the 1000-way head's scale) do not
  disturb the pretrained features in the first steps;
* refuses weights that do not fit: another model, missing, unexpected or differently shaped
  arrays, model overrides the weights need but the config lacks (TF padding, BatchNorm epsilon),
  or an input normalisation other than the one they were trained with;
* records where the weights came from in ``<workdir>/init_from.json`` and the data set's class
  names in ``<workdir>/classes.json`` (read by ``predict``).

``init_from`` is a variables checkpoint (``python -m cnn_flax.convert``), a training workdir (its
latest checkpoint, raw weights) or a weights file / URL (:func:`cnn_flax.weights.load`).
Freezing (``finetune.trainable``, ``finetune.freeze_bn_stats``) and the backbone's learning rate
(``finetune.backbone_lr_mult``) act in the optimiser, the train step and the model
(:func:`cnn_flax.training.model_builder.adapt_model`); see ``finetune`` in
:mod:`cnn_flax.configs.base`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from cnn_flax import weights
from cnn_flax.data.eval_transform import Preprocessing
from cnn_flax.errors import one_line
from cnn_flax.models import create_model
from cnn_flax.training import checkpoint, checkpoint_record
from cnn_flax.training.checkpoint_record import CLASSES_FILE
from cnn_flax.training.optim import HEAD
from cnn_flax.training.state import TrainState, create_train_state
from cnn_flax.trees import flat_shapes, shape_differences

INIT_RECORD = "init_from.json"


class FinetuneError(ValueError):
    """Weights that cannot start this run; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Loaded weights and what is known about them.

    Attributes:
      variables: ``{"params", "batch_stats"}`` as host numpy arrays.
      model: the model they are weights of.
      overrides: model overrides they need.
      preprocessing: their evaluation preprocessing record, or ``None`` when unknown.
      record: where they came from (written to ``init_from.json``).
    """

    variables: dict
    model: str
    overrides: Mapping[str, Any]
    preprocessing: Mapping[str, Any] | None
    record: dict


def take_published_normalisation(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """With ``init_from`` naming a published set of ``config.model`` (``IMAGENET1K_V2``,
    ``timm:...``), the run normalises its inputs as that set was trained (timm's TF ports: mean
    and std 0.5), unless the overrides set ``data.mean`` / ``data.std``: the recipe's defaults
    are those of the model's default set, which another set may not share. Without this, the
    check in :func:`check_fits` would ask for the two flags."""
    from cnn_flax.models import list_models

    source = config.get("init_from")
    if not source or config.get("model") not in list_models():
        return config
    try:
        named = weights.published_set(config.model, str(source))
    except weights.WeightsError:
        return config  # read_pretrained says what is wrong with it, in one line
    keys = {item.partition("=")[0].strip().removeprefix("--config.") for item in overrides}
    if named is not None and not keys & {"data.mean", "data.std"}:
        config.data.mean = tuple(m * 255 for m in named.mean)
        config.data.std = tuple(s * 255 for s in named.std)
    return config


def read_pretrained(source: str, config: ml_collections.ConfigDict) -> Pretrained:
    """Loads ``source`` (see the module docstring) for ``config.model``.

    Raises:
      FinetuneError: nothing readable there, or weights of another model.
    """
    path = pathlib.Path(source).expanduser()
    if path.is_dir():
        pretrained = _from_checkpoint(path.resolve())
    else:
        try:
            loaded = weights.load(
                config.model, source, format=config.finetune.get("weights_format")
            )
        except (weights.WeightsError, TypeError) as err:
            raise FinetuneError(f"init_from={source}: {one_line(err)}") from None
        provenance = loaded.provenance.to_json()
        pretrained = Pretrained(
            variables=loaded.variables,
            model=config.model,
            overrides=dict(loaded.provenance.overrides),
            preprocessing=loaded.provenance.preprocessing,
            record={"source": provenance["url"] or provenance["file"], "kind": "weights file"}
            | {"weights": provenance},
        )
    if pretrained.model != config.model:
        raise FinetuneError(
            f"init_from={source} holds {pretrained.model!r} weights but config.model is "
            f"{config.model!r}; pass --config.model={pretrained.model} (or other weights)."
        )
    return pretrained


def _from_checkpoint(path: pathlib.Path) -> Pretrained:
    try:
        variables = checkpoint.load_variables(path)
        meta = checkpoint.find_model_meta(path)
    except checkpoint.CheckpointError as err:
        raise FinetuneError(f"init_from={path}: {one_line(err)}") from None
    record: dict[str, Any] = {"source": str(path), "model": meta["model"]}
    preprocessing = meta.get("preprocessing")
    if checkpoint.is_variables_checkpoint(path):
        record |= {"kind": "variables checkpoint", "meta": meta}
    else:
        step_dir = checkpoint.training_step_dir(path)
        workdir = step_dir.parent.parent
        record |= {"kind": "training workdir", "step": int(step_dir.name)}
        upstream = workdir / INIT_RECORD
        if upstream.is_file():  # the run it continues was itself fine-tuned: keep the chain
            record["init_from"] = json.loads(upstream.read_text())
        preprocessing = _workdir_preprocessing(workdir)
    return Pretrained(
        variables=variables,
        model=meta["model"],
        overrides=dict(meta.get("overrides") or {}),
        preprocessing=preprocessing,
        record=record,
    )


def _workdir_preprocessing(workdir: pathlib.Path) -> dict | None:
    recorded = checkpoint_record.read(workdir).preprocessing
    return None if recorded is None else recorded.to_json()


def check_fits(pretrained: Pretrained, config: ml_collections.ConfigDict, source: str) -> None:
    """Raises :class:`FinetuneError` when the config builds a model the weights do not fit
    beyond their shapes: overrides they need, or their input normalisation."""
    configured = dict(config.model_overrides.to_dict()) if config.model_overrides else {}
    model = create_model(config.model, **configured)
    missing = {
        key: value
        for key, value in pretrained.overrides.items()
        if _plain(getattr(model, key, None)) != _plain(value)
    }
    if missing:
        flags = " ".join(f"--config.model_overrides.{k}={v}" for k, v in missing.items())
        raise FinetuneError(
            f"init_from={source} needs model overrides {missing} that the config lacks; "
            f"add {flags}."
        )
    if pretrained.preprocessing is not None:
        theirs = Preprocessing.from_json(pretrained.preprocessing)
        ours = Preprocessing.from_config(config)
        diffs = [d for d in theirs.differences(ours) if d.startswith(("mean", "std"))]
        if diffs:
            raise FinetuneError(
                f"init_from={source} was trained on inputs normalised otherwise (weights vs "
                f"config: {'; '.join(diffs)}); pass "
                f"{' '.join(theirs.config_overrides()[2:])}."
            )


def merge(
    fresh: Mapping[str, Any],
    pretrained: Pretrained,
    *,
    reset_head: bool,
    source: str,
) -> tuple[dict, str]:
    """The pretrained variables, with a zero head where the loaded one does not fit (or
    ``reset_head``); checked array by array against the fresh ones. Returns them and what
    happened to the head.

    Raises:
      FinetuneError: listing the arrays that are missing, unexpected or shaped differently.
    """
    fresh_head = fresh["params"].get(HEAD)
    loaded_head = pretrained.variables["params"].get(HEAD)
    if fresh_head is None or loaded_head is None:
        raise FinetuneError(f"init_from={source}: no 'head' subtree in the model or the weights.")
    head_fits = flat_shapes(fresh_head) == flat_shapes(loaded_head)
    keep_head = head_fits and not reset_head
    new = jax.tree_util.tree_map(np.asarray, dict(pretrained.variables))
    new_head = jax.tree.map(np.zeros_like, fresh_head)
    new["params"] = {**new["params"], HEAD: loaded_head if keep_head else new_head}
    new.setdefault("batch_stats", {})
    fresh = {"params": fresh["params"], "batch_stats": fresh.get("batch_stats", {})}
    _check_same_arrays(fresh, new, source=source)
    if keep_head:
        head = "kept from the weights"
    else:
        why = "reset_head=True" if head_fits else "class count differs"
        head = f"new, zeros ({why}: {_classes(loaded_head)} -> {_classes(fresh_head)} classes)"
    return new, head


def initial_state(
    config: ml_collections.ConfigDict,
    init_state: Callable[[], TrainState],
    *,
    tx: Any,
    sharding: jax.sharding.Sharding,
    workdir: pathlib.Path,
    data_source: Any,
    loss_scale: Any = None,
) -> TrainState:
    """The step-0 state of a run, from ``config.init_from`` if set, and the run's input record.

    Args:
      config: the training config.
      init_state: builds the randomly initialised state (the trainer's).
      tx: the optimiser, to initialise its state for the loaded parameters.
      sharding: where the state lives (replicated).
      workdir: the run's folder; ``classes.json`` and ``init_from.json`` go there.
      data_source: the data API (its ``get_class_names`` is used when it has one).
      loss_scale: the float16 loss scale, as the trainer's initial state has it.

    Raises:
      FinetuneError: the weights cannot start this run (nothing is written then).
    """
    source = config.get("init_from")
    pretrained = None
    if source:
        pretrained = read_pretrained(source, config)
        check_fits(pretrained, config, source)
    state = jax.jit(init_state, out_shardings=sharding)()
    record = None
    if pretrained is not None:
        fresh = jax.device_get(state.variables())
        variables, head = merge(
            fresh, pretrained, reset_head=bool(config.finetune.reset_head), source=source
        )

        def build(v):
            return create_train_state(
                v, tx, use_ema=config.get("ema_decay") is not None, loss_scale=loss_scale
            )

        state = jax.jit(build, out_shardings=sharding)(jax.device_put(variables, sharding))
        record = {**pretrained.record, "model": config.model, "head": head}
    if jax.process_index() == 0:
        if record is not None:
            print(f"Initialised from {source} ({record['kind']}); head {head}.")
        _write_records(workdir, config, data_source, record)
    return state


def _write_records(workdir: pathlib.Path, config, data_source: Any, record: dict | None) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if record is not None:
        (workdir / INIT_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    class_names = getattr(data_source, "get_class_names", None)
    if class_names is not None:
        names = {"data": str(config.data.name), "names": list(class_names(config.data))}
        (workdir / CLASSES_FILE).write_text(json.dumps(names, indent=2) + "\n")


def _check_same_arrays(fresh: Any, new: Any, *, source: str) -> None:
    parts = shape_differences(fresh, new)
    if parts:
        raise FinetuneError(
            f"init_from={source}: the weights do not fit this model ({'; '.join(parts)}); are "
            "they weights of this model with the same model_overrides?"
        )


def _classes(head: Any) -> int:
    kernel = head["kernel"] if "kernel" in head else jax.tree.leaves(head)[0]
    return int(np.shape(kernel)[-1])


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
