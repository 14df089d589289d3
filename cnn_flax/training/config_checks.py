"""The one validation of a training config: every field the trainer, optimiser and data read.

``train`` and ``evaluate`` call :func:`check_config` once, right after loading the config and its
overrides, before any data is read or anything is compiled, so a bad value costs one line and
no compute. The code that reads a field afterwards trusts it. The allowed names come from the
code that implements them (``optim``'s tables, ``steps.DTYPES``, ``model_builder.BN_MODES``), so
a new optimiser or schedule is allowed the moment it exists.

Values that depend on the data set or the devices (steps per epoch, the batch per device) are
derived once, in :mod:`cnn_flax.training.run_plan`.

What stays with its owner: a model's own fields (``model_overrides``, checked by name when the
model is built) and the augmentation policies (their table lives with the TensorFlow ops in
:mod:`cnn_flax.data.augment`).
"""

from __future__ import annotations

import difflib
import math
import numbers
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections

from cnn_flax import configs
from cnn_flax.training import finetune

_OPEN_GROUPS = ("model_overrides",)  # keys a model defines; not part of the schema


def check_config(config: Any) -> None:
    """Raises ``ValueError`` naming the first bad field of ``config`` and how to fix it.

    Args:
      config: a resolved training config (a recipe's ``get_config()`` plus overrides).

    Raises:
      ValueError: not a ``ConfigDict``, a field missing from or unknown to the schema of
        :func:`cnn_flax.configs.base.get_base_config`, or a value of the wrong type or range.
    """
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(
            f"The config is a {type(config).__name__}, not an ml_collections.ConfigDict; "
            "get_config() must return one (start from cnn_flax.configs.base.get_base_config())."
        )
    _check_schema(config)
    _check_run(config)
    _check_optimizer(config)
    _check_schedule(config)
    _check_data(config)
    _check_finetune(config)


def load_config(
    name_or_path: str | None,
    overrides: Sequence[str] = (),
    *,
    workdir: str | pathlib.Path | None = None,
) -> ml_collections.ConfigDict:
    """The config a command runs: :func:`cnn_flax.configs.load` (``name_or_path``, else the
    workdir's ``config.json``; then ``overrides``), checked by :func:`check_config`.

    Raises:
      ValueError: an unknown config, a bad override or a bad field, before any compute.
    """
    config = configs.load(name_or_path, overrides, workdir=workdir)
    if name_or_path:
        config = finetune.take_published_normalisation(config, overrides)
    check_config(config)
    return config


# --- the schema -----------------------------------------------------------------------------------


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        keys.add(prefix + key)
        if isinstance(value, ml_collections.ConfigDict) and prefix + key not in _OPEN_GROUPS:
            keys |= _flat_keys(value, f"{prefix}{key}.")
    return keys


def _check_schema(config: ml_collections.ConfigDict) -> None:
    from cnn_flax.configs.base import get_base_config

    expected = _flat_keys(get_base_config())
    present = _flat_keys(config)
    unknown = sorted(present - expected)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(expected), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Config field {unknown[0]!r} is not part of the training config schema "
            f"(cnn_flax.configs.base).{hint}"
        )
    missing = sorted(expected - present)
    if missing:
        raise ValueError(
            f"Config field {missing[0]!r} is missing; build the config from "
            "cnn_flax.configs.base.get_base_config() and change fields instead of leaving some out."
        )


# --- field checks ---------------------------------------------------------------------------------


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node[part]
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _integer(config, key: str, *, minimum: int, none_means: str | None = None) -> None:
    value = _get(config, key)
    if value is None and none_means:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        unset = f" (or None: {none_means})" if none_means else ""
        raise ValueError(f"{key}={value!r} must be an integer >= {minimum}{unset}.")


def _number(
    config,
    key: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    none_means: str | None = None,
) -> None:
    value = _get(config, key)
    if value is None and none_means:
        return
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open or high == math.inf else "]"
        upper = "inf" if high == math.inf else f"{high:g}"
        unset = f" (or None: {none_means})" if none_means else ""
        raise ValueError(
            f"{key}={value!r} must be a number in {left}{low:g}, {upper}{right}{unset}."
        )


def _choice(config, key: str, choices: Iterable[str]) -> None:
    value = _get(config, key)
    choices = tuple(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{key}={value!r} is not one of {', '.join(choices)}.{hint}")


def _boolean(config, key: str) -> None:
    value = _get(config, key)
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} must be true or false.")


def _text(config, key: str, *, none_means: str | None = None) -> None:
    value = _get(config, key)
    if value in (None, "") and none_means:
        return
    if not isinstance(value, str) or not value:
        unset = f" (or None: {none_means})" if none_means else ""
        raise ValueError(f"{key}={value!r} must be a non-empty string{unset}.")


def _numbers(config, key: str, *, length: int | None = None, positive: bool = False) -> None:
    value = _get(config, key)
    ok = isinstance(value, (tuple, list)) and all(_is_number(v) for v in value)
    ok = ok and (length is None or len(value) == length)
    ok = ok and (not positive or all(v > 0 for v in value))
    if not ok:
        what = f"{length} numbers" if length else "a tuple of numbers"
        raise ValueError(
            f"{key}={value!r} needs {what}{', all > 0' if positive else ''}, e.g. "
            f"{key}={tuple(_get(_base(), key))}."
        )


def _base() -> ml_collections.ConfigDict:
    from cnn_flax.configs.base import get_base_config

    return get_base_config()


# --- the groups -----------------------------------------------------------------------------------


def _check_run(config: ml_collections.ConfigDict) -> None:
    from cnn_flax.training import steps
    from cnn_flax.training.model_builder import BN_MODES, BN_RUNNING_VARS

    _text(config, "model")
    _choice(config, "dtype", steps.DTYPES)
    _integer(config, "seed", minimum=0)
    _integer(config, "batch_size", minimum=1)
    _number(config, "num_epochs", low=0.0, low_open=True)
    _integer(config, "total_steps", minimum=1, none_means="train num_epochs epochs")
    for key in ("log_every_steps", "eval_every_steps", "keep_checkpoints"):
        _integer(config, key, minimum=1)
    _integer(config, "checkpoint_every_steps", minimum=0)  # 0: only at the end
    _boolean(config, "keep_best")
    _number(config, "label_smoothing", low=0.0, high=1.0, high_open=True)
    _number(config, "aux_loss_weight", low=0.0)
    _number(
        config, "ema_decay", low=0.0, high=1.0, low_open=True, high_open=True, none_means="no EMA"
    )
    _boolean(config, "ema_warmup")
    _integer(config, "ema_every_steps", minimum=1)
    for key in ("ema_adjust", "ema_copy_in_warmup", "ema_batch_stats"):
        _boolean(config, key)
    if config.ema_warmup and config.ema_copy_in_warmup:
        raise ValueError(
            "ema_warmup=True (TensorFlow's num_updates warm-up) and ema_copy_in_warmup=True "
            "(torchvision's reset during the learning-rate warm-up) are two warm-ups of the EMA; "
            "set one of them to false."
        )
    _choice(config, "bn_mode", BN_MODES)
    if "bn_running_var" in config:  # absent from configs saved before it existed
        _choice(config, "bn_running_var", BN_RUNNING_VARS)
    if "bn_reestimate_batches" in config:  # absent from configs saved before it existed
        _integer(config, "bn_reestimate_batches", minimum=0)
    _integer(config, "grad_accum_steps", minimum=1)
    if config.batch_size % config.grad_accum_steps:
        raise ValueError(
            f"grad_accum_steps={config.grad_accum_steps} must divide batch_size="
            f"{config.batch_size} (each update averages that many equal micro-batches)."
        )
    _number(config, "clip_grad_norm", low=0.0, low_open=True, none_means="no clipping")
    _number(config, "loss_scale.initial", low=0.0, low_open=True)
    _integer(config, "loss_scale.growth_interval", minimum=1)
    _text(config, "compilation_cache_dir", none_means="no persistent cache")
    _text(config, "recipe", none_means="not from a model's recipe")
    _number(config, "target_top1", low=0.0, high=100.0, none_means="no published target")


def _check_optimizer(config: ml_collections.ConfigDict) -> None:
    from cnn_flax.training import optim

    _choice(config, "optimizer.name", optim.OPTIMIZERS)
    # 0 is allowed: the run keeps its initial (or loaded) weights and only BatchNorm statistics
    # move, which recalibrates pretrained weights on new data.
    _number(config, "optimizer.lr", low=0.0)
    _choice(config, "optimizer.lr_scaling", optim.LR_SCALINGS)
    for key in ("momentum", "b1", "b2", "rmsprop_decay"):
        _number(config, f"optimizer.{key}", low=0.0, high=1.0, high_open=True)
    for key in ("weight_decay", "eps", "rmsprop_initial_scale"):
        _number(config, f"optimizer.{key}", low=0.0)
    _number(config, "optimizer.trust_coefficient", low=0.0, low_open=True)
    _choice(config, "optimizer.weight_decay_mask", optim.WEIGHT_DECAY_MASKS)
    for key in ("nesterov", "tf_style_eps", "rmsprop_centered"):
        _boolean(config, f"optimizer.{key}")


def _check_schedule(config: ml_collections.ConfigDict) -> None:
    from cnn_flax.training import optim

    _choice(config, "schedule.name", optim.SCHEDULES)
    _number(config, "schedule.warmup_epochs", low=0.0)
    # Epoch-valued fields are scaled by total_steps / num_epochs (see configs/base.py), so a
    # warm-up longer than num_epochs is longer than the run whatever the data set.
    if config.schedule.warmup_epochs > config.num_epochs:
        raise ValueError(
            f"schedule.warmup_epochs={config.schedule.warmup_epochs} is longer than the whole run "
            f"(num_epochs={config.num_epochs}); shorten the warm-up or train longer."
        )
    _number(config, "schedule.warmup_init_factor", low=0.0)
    _choice(config, "schedule.warmup_shape", optim.WARMUP_SHAPES)
    _number(config, "schedule.end_lr_factor", low=0.0)
    _numbers(config, "schedule.boundaries_epochs")
    boundaries = list(config.schedule.boundaries_epochs)
    if boundaries != sorted(boundaries) or any(b < 0 for b in boundaries):
        raise ValueError(
            f"schedule.boundaries_epochs={tuple(boundaries)} must be non-negative and in "
            "increasing order, e.g. (30, 60, 80)."
        )
    _number(config, "schedule.decay_factor", low=0.0, low_open=True)
    _number(config, "schedule.decay_epochs", low=0.0, low_open=True)
    _number(config, "schedule.decay_rate", low=0.0, low_open=True)
    _boolean(config, "schedule.staircase")


def _check_data(config: ml_collections.ConfigDict) -> None:
    _text(config, "data.name")
    _text(config, "data.data_dir", none_means="$TFDS_DATA_DIR or tfds' default")
    for key in ("data.train_split", "data.eval_split"):
        _text(config, key, none_means="the data set's own split")
    _integer(config, "data.image_size", minimum=1)
    _integer(config, "data.eval_crop_size", minimum=1, none_means="data.image_size")
    _integer(config, "data.eval_resize_size", minimum=1, none_means="crop / eval_crop_ratio")
    _number(config, "data.eval_crop_ratio", low=0.0, high=1.0, low_open=True)
    resize, crop = config.data.eval_resize_size, config.data.eval_crop_size
    if resize is not None and resize < (crop or config.data.image_size):
        raise ValueError(
            f"data.eval_resize_size={resize} is smaller than the eval crop "
            f"({crop or config.data.image_size}); set it >= the crop (e.g. 232 for 224)."
        )
    _integer(config, "data.max_image_pixels", minimum=1)
    _integer(config, "data.repeated_augmentation", minimum=1)  # 1: off
    _numbers(config, "data.mean", length=3)
    _numbers(config, "data.std", length=3, positive=True)
    for key in ("inception_crop", "flip", "pad_crop", "trivial_augment_wide"):
        _boolean(config, f"data.augment.{key}")
    _number(config, "data.augment.random_erasing", low=0.0, high=1.0)
    _boolean(config, "data.augment.random_erasing_noise")
    _integer(config, "data.augment.randaugment.num_layers", minimum=0)  # 0: off
    _text(config, "data.augment.autoaugment", none_means="off")
    _number(config, "data.augment.mixup_alpha", low=0.0)
    _number(config, "data.augment.cutmix_alpha", low=0.0)
    _integer(config, "data.shuffle_buffer", minimum=0)
    _boolean(config, "data.cache")
    num_calls = config.data.num_parallel_calls
    if num_calls != -1 and (not isinstance(num_calls, int) or num_calls < 1):
        raise ValueError(
            f"data.num_parallel_calls={num_calls!r} must be -1 (tf.data.AUTOTUNE) or an integer "
            ">= 1."
        )
    _integer(config, "data.prefetch", minimum=1)


def _check_finetune(config: ml_collections.ConfigDict) -> None:
    from cnn_flax.training.optim import TRAINABLE

    _text(config, "init_from", none_means="random initialisation")
    _text(config, "finetune.weights_format", none_means="detected from the file's keys")
    if config.finetune.weights_format:
        from cnn_flax.models import list_models
        from cnn_flax.weights import formats_for

        if config.model in list_models():  # an unknown model is reported where it is built
            _choice(config, "finetune.weights_format", formats_for(config.model))
    _boolean(config, "finetune.reset_head")
    _choice(config, "finetune.trainable", TRAINABLE)
    _boolean(config, "finetune.freeze_bn_stats")
    if "from_scratch" in config.finetune:  # configs saved before the field existed lack it
        _boolean(config, "finetune.from_scratch")
    _number(config, "finetune.backbone_lr_mult", low=0.0, high=1e3)


__all__ = ["check_config"]
