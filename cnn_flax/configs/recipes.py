"""Shared base recipes, and the config of a registered model built from its family's recipe.

A family states its recipe as data (:class:`cnn_flax.models.registry.Recipe`): the name of one of
the base recipes below plus its own changes as dotted config keys. :func:`model_config` builds
the ``ml_collections`` config: the shared defaults (:mod:`cnn_flax.configs.base`), the model's
facts (resolution, evaluation crop), the base recipe, then the family's and the variant's
changes. So a new family that trains like an existing one names a base here and touches no file
of this package.

Each base is a dict of dotted keys, so a recipe's resolved values can be listed and compared with
the published ones field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from cnn_flax.configs import base

# torchvision ``references/classification/train.py`` defaults (its README, "AlexNet and VGG"):
# SGD momentum 0.9, batch 256 (32 x 8 GPUs), StepLR x0.1 every 30 epochs, 90 epochs, weight decay
# 1e-4 on every parameter (``--norm-weight-decay`` unset); families set lr and weight decay.
TORCHVISION_STEP: dict[str, Any] = {
    "dtype": "bfloat16",
    "batch_size": 256,
    "num_epochs": 90.0,
    "label_smoothing": 0.0,
    "eval_every_steps": 10_000,  # ~2 epochs at batch 256
    "checkpoint_every_steps": 10_000,
    "optimizer.name": "sgd",
    "optimizer.lr": 0.1,
    "optimizer.momentum": 0.9,
    "optimizer.nesterov": False,
    "optimizer.weight_decay": 1e-4,
    "optimizer.weight_decay_mask": "all",
    "schedule.name": "step",
    "schedule.warmup_epochs": 0.0,
    "schedule.boundaries_epochs": (30.0, 60.0),
    "schedule.decay_factor": 0.1,
    "data.image_size": 224,
    "data.eval_crop_ratio": 0.875,
}

# The modern 90-epoch ResNet recipe: SGD Nesterov 0.9, base lr 0.1 per 256 images (Goyal et al.
# 2017), 5 linear warm-up epochs then cosine to 0 and no decay on BatchNorm and biases (He et al.
# 2019, "Bag of Tricks"), label smoothing 0.1 (Szegedy et al. 2016), batch 1024, bfloat16,
# evaluation on the 224 centre crop of a 256 resize.
RESNET_COSINE: dict[str, Any] = {
    "dtype": "bfloat16",
    "batch_size": 1024,
    "num_epochs": 90.0,
    "label_smoothing": 0.1,
    "eval_every_steps": 2500,  # ~2 epochs at batch 1024
    "checkpoint_every_steps": 2500,
    "optimizer.name": "sgd",
    "optimizer.lr": 0.1,
    "optimizer.momentum": 0.9,
    "optimizer.nesterov": True,
    "optimizer.weight_decay": 1e-4,
    "optimizer.weight_decay_mask": "no_bn_bias",
    "schedule.name": "cosine",
    "schedule.warmup_epochs": 5.0,
    "data.image_size": 224,
    "data.eval_crop_ratio": 0.875,
}

# The TensorFlow TPU reference recipe of MnasNet, MobileNet v3 and EfficientNet
# (github.com/tensorflow/tpu models/official/{mnasnet,efficientnet}; Tan and Le 2019, sec. 5.2):
# RMSProp as tf.compat.v1.train.RMSPropOptimizer (decay 0.9, momentum 0.9, epsilon 1e-3 inside
# the square root, mean square started at 1.0), base lr 0.016 per 256 images, 5 warm-up epochs
# then x0.97 every 2.4 epochs (staircase), weight decay 1e-5, label smoothing 0.1, an EMA of the
# weights at 0.9999 with TF's num_updates warm-up, 350 epochs, batch 1024, bfloat16.
TF_TPU: dict[str, Any] = {
    "dtype": "bfloat16",
    "batch_size": 1024,
    "num_epochs": 350.0,
    "label_smoothing": 0.1,
    "ema_decay": 0.9999,
    "ema_warmup": True,
    "eval_every_steps": 2500,
    "checkpoint_every_steps": 2500,
    "optimizer.name": "rmsprop",
    "optimizer.lr": 0.016,
    "optimizer.rmsprop_decay": 0.9,
    "optimizer.momentum": 0.9,
    "optimizer.eps": 1e-3,
    "optimizer.tf_style_eps": True,
    "optimizer.rmsprop_initial_scale": 1.0,
    "optimizer.weight_decay": 1e-5,
    "optimizer.weight_decay_mask": "no_bn_bias",
    "schedule.name": "exponential",
    "schedule.warmup_epochs": 5.0,
    "schedule.decay_rate": 0.97,
    "schedule.decay_epochs": 2.4,
    "schedule.staircase": True,
}

# torchvision's "new training recipe" (Vryniotis 2021, "How to train state-of-the-art models
# using TorchVision's latest primitives"; references/classification/README.md), the ResNet-50
# V2 command: SGD momentum 0.9, lr 0.5 at batch 1024 (8 x 128), cosine after 5 linear warm-up
# epochs from 0.01 x the peak, 600 epochs, weight decay 2e-5 and none on norm layers, label
# smoothing 0.1, mixup 0.2 / cutmix 1.0, an EMA of the weights. Families that torchvision trained
# with it (ConvNeXt, RegNet, EfficientNetV2, ...) change the optimiser and its constants.
TORCHVISION_V2: dict[str, Any] = {
    "dtype": "bfloat16",
    "batch_size": 1024,
    "num_epochs": 600.0,
    "label_smoothing": 0.1,
    "ema_decay": 0.99998,
    "eval_every_steps": 2500,
    "checkpoint_every_steps": 2500,
    "optimizer.name": "sgd",
    "optimizer.lr": 0.5 * 256 / 1024,  # base rate per 256 images: 0.5 at batch 1024
    "optimizer.momentum": 0.9,
    "optimizer.nesterov": False,
    "optimizer.weight_decay": 2e-5,
    "optimizer.weight_decay_mask": "no_bn_bias",
    "schedule.name": "cosine",
    "schedule.warmup_epochs": 5.0,
    "schedule.warmup_init_factor": 0.01,
    "data.augment.mixup_alpha": 0.2,
    "data.augment.cutmix_alpha": 1.0,
}

# CIFAR-10 statistics (per channel, 0-255 scale).
CIFAR10_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR10_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
_CIFAR_BATCH = 128
_CIFAR_EPOCH_ITERATIONS = 50_000 / _CIFAR_BATCH  # 390.625

# He et al. 2016, sec. 4.2: "weight decay of 0.0001 and momentum of 0.9 ... mini-batch size of 128
# ... learning rate of 0.1, divide it by 10 at 32k and 48k iterations, and terminate training at
# 64k iterations ... 4 pixels are padded on each side, and a 32x32 crop is randomly sampled from
# the padded image or its horizontal flip." Weight decay on every parameter, as in the authors'
# Torch code; normalised with the CIFAR-10 channel statistics; float32. The schedule is written in
# iterations (total_steps=64000, boundaries at 32k and 48k); setting total_steps rescales it.
CIFAR10_RESNET: dict[str, Any] = {
    "dtype": "float32",
    "batch_size": _CIFAR_BATCH,
    "num_epochs": 64_000 / _CIFAR_EPOCH_ITERATIONS,  # 163.84
    "total_steps": 64_000,
    "label_smoothing": 0.0,
    "log_every_steps": 200,
    "eval_every_steps": 2000,
    "checkpoint_every_steps": 4000,
    "optimizer.name": "sgd",
    "optimizer.lr": 0.1 * 256 / _CIFAR_BATCH,  # 0.1 at batch 128 under linear scaling
    "optimizer.momentum": 0.9,
    "optimizer.nesterov": False,
    "optimizer.weight_decay": 1e-4,
    "optimizer.weight_decay_mask": "all",
    "schedule.name": "step",
    "schedule.boundaries_epochs": (
        32_000 / _CIFAR_EPOCH_ITERATIONS,
        48_000 / _CIFAR_EPOCH_ITERATIONS,
    ),
    "schedule.decay_factor": 0.1,
    "data.name": "cifar10",
    "data.train_split": "train",
    "data.eval_split": "test",
    "data.image_size": 32,
    "data.eval_crop_ratio": 1.0,
    "data.mean": CIFAR10_MEAN,
    "data.std": CIFAR10_STD,
    "data.augment.inception_crop": False,
    "data.augment.pad_crop": True,
    "data.augment.flip": True,
    "data.shuffle_buffer": 50_000,
    "data.cache": True,
}
BASES: dict[str, Mapping[str, Any]] = {
    "torchvision_step": TORCHVISION_STEP,
    "resnet_cosine": RESNET_COSINE,
    "tf_tpu": TF_TPU,
    "torchvision_v2": TORCHVISION_V2,
    "cifar10_resnet": CIFAR10_RESNET,
}


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Sets dotted ``key`` of ``config`` to a Python value (the ConfigDict checks its type).

    Keys under ``model_overrides`` may be new: they are module fields that ``create_model``
    checks by name.
    """
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    if parents == ["model_overrides"] and leaf not in node:
        with node.unlocked():
            node[leaf] = value
        return
    if leaf not in node:
        raise KeyError(f"recipe sets unknown config key {key!r}")
    node[leaf] = value


def apply_fields(config: ml_collections.ConfigDict, fields: Mapping[str, Any]) -> None:
    """:func:`set_field` for each item, in order."""
    for key, value in fields.items():
        set_field(config, key, value)


def model_config(name: str, recipe: str = "") -> ml_collections.ConfigDict:
    """The training config of registered model ``name`` under its recipe ``recipe``.

    Args:
      name: a registered model name.
      recipe: a recipe key of the model (``""``: its default recipe; e.g. ``"v2"``).

    Raises:
      ValueError: if the model has no such recipe.
    """
    from cnn_flax.models import model_info

    info = model_info(name)
    chosen = info.recipes.get(recipe)
    if chosen is None:
        have = ", ".join(repr(k) for k in info.recipes) or "none"
        raise ValueError(f"Model {name!r} has no recipe {recipe!r} (it has: {have}).")
    if chosen.base not in BASES:
        raise ValueError(f"{name}: recipe base {chosen.base!r} is not one of {sorted(BASES)}.")
    config = base.get_base_config()
    base.set_model(config, name)
    apply_fields(config, BASES[chosen.base])
    apply_fields(config, chosen.overrides)
    config.recipe = f"{name}{'_' + recipe if recipe else ''}: {chosen.source}".strip()
    config.target_top1 = chosen.target_top1
    return config
