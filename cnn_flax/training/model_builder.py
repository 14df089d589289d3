"""The model a training config describes, for the trainer and for evaluation alike.

BatchNorm (``config.bn_mode``):

* ``"global"`` (default): statistics over the whole global batch, all devices together. Under
  ``jit`` with a sharded batch this is what ``nn.BatchNorm`` computes anyway (XLA adds a small
  all-reduce per layer). The model then computes the same function whatever the number of
  devices, so a recipe's result does not depend on the hardware it ran on, and results can be
  checked against a one-device run. The all-reduce costs little next to convolutions.
* ``"per_device"``: each device normalises its own examples (:class:`cnn_flax.models.norm.
  GroupBatchNorm`), as the multi-GPU reference runs did (Goyal et al. 2017); the per-device batch
  then acts as the BN batch and the result depends on the device count.

BatchNorm's running variance (``config.bn_running_var``): ``"unbiased"`` (default) updates it as
torch does, with ``n / (n - 1)`` times the batch variance, so statistics evolve as in the
torchvision recipes; ``"biased"`` is Flax's and Keras's convention (runs made before the default
changed). Names and shapes are the same either way: checkpoints load in both.

Convolutions: ``model_overrides.conv`` may name a preset of :data:`cnn_flax.models.depthwise.
PRESETS` (``"cpu"``, ``"shift"``, ``"xla"``), e.g. ``--config.model_overrides.conv=cpu``; the
model then binds that implementation in place of ``nn.Conv`` (``layers.bind_conv``), with the
same parameters, so checkpoints move between the implementations unchanged.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from cnn_flax.models import create_model, depthwise
from cnn_flax.models.norm import biased_running_var, frozen_batch_norm, per_device_batch_norm
from cnn_flax.training import optim, steps

BN_MODES = ("global", "per_device")
BN_RUNNING_VARS = ("unbiased", "biased")


def build_model(config: ml_collections.ConfigDict, *, num_classes: int, num_devices: int) -> Any:
    """The config's model, with per-device BatchNorm injected when ``bn_mode="per_device"``."""
    overrides = dict(config.model_overrides.to_dict()) if config.model_overrides else {}
    if isinstance(overrides.get("conv"), str):
        overrides["conv"] = depthwise.conv_preset(overrides["conv"])
    dtype = steps.compute_dtype(config.dtype)
    model = create_model(config.model, num_classes=num_classes, dtype=dtype, **overrides)
    if freezes_batch_norm(config):  # no batch statistics at all: bn_mode is moot
        return adapt_model(model, config)
    if config.bn_mode == "per_device":
        # Every BatchNorm the model is given, found by type (models without BatchNorm unchanged).
        model = per_device_batch_norm(model, num_devices)
    if config.get("bn_running_var", "unbiased") == "biased":
        model = biased_running_var(model)
    return model


def freezes_batch_norm(config: ml_collections.ConfigDict) -> bool:
    """Whether BatchNorm keeps its loaded statistics: asked for, or implied by a linear probe."""
    finetune = config.get("finetune")
    if finetune is None:
        return False
    return bool(finetune.freeze_bn_stats) or optim.trainable_part(config) == "head"


def adapt_model(model: Any, config: ml_collections.ConfigDict) -> Any:
    """The model with :class:`~cnn_flax.models.norm.FrozenBatchNorm` where the config freezes
    BatchNorm statistics (``finetune.freeze_bn_stats``), else unchanged."""
    return frozen_batch_norm(model) if freezes_batch_norm(config) else model


__all__ = ["BN_MODES", "BN_RUNNING_VARS", "adapt_model", "build_model", "freezes_batch_norm"]
