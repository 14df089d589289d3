"""Each recipe on a torchvision_v2 base, resolved, against torchvision's published command.

The published values are kept once, in tests/facts/torchvision_recipes.csv (see its README);
the recipes hold their own numbers in cnn_flax (configs/recipes.py and the family files). The
test resolves a recipe exactly as ``--config=NAME`` does and compares field by field, reading
the run plan for the derived numbers (peak rate, EMA decay) as the trainer does.
"""

from __future__ import annotations

import csv
import math

import pytest

from cnn_flax import configs
from cnn_flax.configs import recipes
from cnn_flax.data.sizes import eval_sizes, train_size
from cnn_flax.training import optim
from cnn_flax.training.config_checks import check_config
from cnn_flax.training.run_plan import make_run_plan
from tests.helpers import FACTS_DIR

IMAGENET_TRAIN = 1_281_167  # ImageNet-1k's train split, for the plan's arithmetic
V2_BASES = tuple(b for b in recipes.BASES if b.startswith("torchvision_v2"))


def _rows() -> dict[str, dict[str, str]]:
    with open(FACTS_DIR / "torchvision_recipes.csv", newline="") as f:
        return {row["config"]: row for row in csv.DictReader(f)}


ROWS = _rows()


def _number(text: str) -> float | None:
    return None if text == "" else float(text)


def _decay_mask(row: dict[str, str]) -> str:
    """torchvision's parameter groups -> our mask name (the masks are tested in test_optim)."""
    keys = ("norm_weight_decay", "bias_weight_decay", "transformer_embedding_decay")
    groups = tuple(row[k] for k in keys)
    masks = {("", "", ""): "all", ("0.0", "", ""): "no_norm", ("0.0", "0.0", "0.0"): "kernels"}
    return masks[groups]


def _augmentation(row: dict[str, str]) -> dict[str, object]:
    policy = row["auto_augment"]
    magnitude = int(row["ra_magnitude"])
    return {
        "trivial_augment_wide": policy == "ta_wide",
        "randaugment": (2, magnitude) if policy == "ra" else (0, 9),  # torchvision: 2 ops
        "autoaugment": "v0" if policy == "imagenet" else None,
    }


def resolved(config) -> dict[str, object]:
    """The recipe's values, in the published table's terms."""
    plan = make_run_plan(config, num_train=IMAGENET_TRAIN)
    peak = optim.peak_learning_rate(config, plan)
    aug = config.data.augment
    sizes = eval_sizes(config.data)
    return {
        "batch_size": config.batch_size,
        "opt": config.optimizer.name,
        "momentum": config.optimizer.momentum if config.optimizer.name == "sgd" else None,
        "nesterov": config.optimizer.nesterov,
        "lr": peak,
        "lr_scheduler": config.schedule.name,
        "lr_warmup_method": config.schedule.warmup_shape,
        "lr_warmup_epochs": config.schedule.warmup_epochs,
        "lr_warmup_decay": config.schedule.warmup_init_factor,
        "lr_min": peak * config.schedule.end_lr_factor,
        "epochs": config.num_epochs,
        "weight_decay": config.optimizer.weight_decay,
        "weight_decay_mask": config.optimizer.weight_decay_mask,
        "label_smoothing": config.label_smoothing,
        "mixup_alpha": aug.mixup_alpha,
        "cutmix_alpha": aug.cutmix_alpha,
        "trivial_augment_wide": aug.trivial_augment_wide,
        "randaugment": (aug.randaugment.num_layers, aug.randaugment.magnitude),
        "autoaugment": aug.autoaugment,
        "random_resized_crop_and_flip": (aug.inception_crop, aug.flip),
        "random_erase": aug.random_erasing,
        "random_erase_value_0": not aug.random_erasing_noise,
        "clip_grad_norm": config.clip_grad_norm,
        "ema": (
            config.ema_decay,
            config.ema_every_steps,
            config.ema_adjust,
            config.ema_copy_in_warmup,
            config.ema_batch_stats,
        ),
        "ema_decay_per_update": plan.ema.decay if plan.ema else None,
        "ra_reps": config.data.repeated_augmentation,
        "train_crop_size": train_size(config.data),
        "val_resize_size": sizes.resize,
        "val_crop_size": sizes.crop,
        "acc1": config.target_top1,
    }


def published(row: dict[str, str]) -> dict[str, object]:
    """The published command's values, in the same terms."""
    batch, epochs = int(row["batch_size"]), float(row["epochs"])
    ema = row["model_ema"] == "1"
    steps, decay = int(row["model_ema_steps"]), float(row["model_ema_decay"])
    # references/classification/train.py: adjust = world_size * batch_size * steps / epochs.
    alpha = min(1.0, (1.0 - decay) * (batch * steps / epochs))
    return {
        "batch_size": batch,
        "opt": row["opt"],
        "momentum": float(row["momentum"]) if row["opt"] == "sgd" else None,
        "nesterov": False,
        "lr": float(row["lr"]),
        "lr_scheduler": {"cosineannealinglr": "cosine"}[row["lr_scheduler"]],
        "lr_warmup_method": row["lr_warmup_method"],
        "lr_warmup_epochs": float(row["lr_warmup_epochs"]),
        "lr_warmup_decay": float(row["lr_warmup_decay"]),
        "lr_min": float(row["lr_min"]),
        "epochs": epochs,
        "weight_decay": float(row["weight_decay"]),
        "weight_decay_mask": _decay_mask(row),
        "label_smoothing": float(row["label_smoothing"]),
        "mixup_alpha": float(row["mixup_alpha"]),
        "cutmix_alpha": float(row["cutmix_alpha"]),
        **_augmentation(row),
        "random_resized_crop_and_flip": (True, True),  # presets.ClassificationPresetTrain
        "random_erase": float(row["random_erase"]),
        "random_erase_value_0": True,  # transforms.RandomErasing's default value
        "clip_grad_norm": _number(row["clip_grad_norm"]),
        "ema": (decay, steps, True, True, True) if ema else (None, 1, False, False, False),
        "ema_decay_per_update": 1.0 - alpha if ema else None,
        "ra_reps": int(row["ra_reps"]) if row["ra_sampler"] == "1" else 1,
        "train_crop_size": int(row["train_crop_size"]),
        "val_resize_size": int(row["val_resize_size"]),
        "val_crop_size": int(row["val_crop_size"]),
        "acc1": float(row["acc1"]),
    }


def _same(ours: object, theirs: object) -> bool:
    if isinstance(theirs, float) and isinstance(ours, (int, float)):
        return math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12)
    return ours == theirs


@pytest.mark.parametrize("name", sorted(ROWS))
def test_recipe_is_torchvisions_command(name):
    config = configs.get_config(name)
    check_config(config)
    ours, theirs = resolved(config), published(ROWS[name])
    assert ours.keys() == theirs.keys()
    differ = {k: (ours[k], theirs[k]) for k in theirs if not _same(ours[k], theirs[k])}
    assert not differ, f"{name}: (ours, torchvision's) {differ}"


def _v2_recipes() -> list[str]:
    """Config names of the recipes on a torchvision_v2 base that have a published target."""
    from cnn_flax.models import model_info

    names = []
    for name, (model, key) in configs.model_recipe_names().items():
        recipe = model_info(model).recipes[key]
        if recipe.base in V2_BASES and recipe.target_top1 is not None:
            names.append(name)
    return sorted(names)


def test_every_torchvision_v2_recipe_has_its_published_row():
    assert _v2_recipes() == sorted(ROWS)


def test_resnet50_v2_is_the_issues_command():
    # The headline numbers, stated once more in words the issue uses (lr 0.5 at batch 1024,
    # EMA decay 0.99998 every 32 steps becomes 1 - 2e-5 * 1024 * 32 / 600 per EMA update).
    ours = resolved(configs.get_config("resnet50_v2"))
    assert ours["lr"] == pytest.approx(0.5) and ours["batch_size"] == 1024
    assert ours["ema_decay_per_update"] == pytest.approx(1 - 2e-5 * 1024 * 32 / 600)
    assert (ours["train_crop_size"], ours["val_resize_size"], ours["val_crop_size"]) == (
        176,
        232,
        224,
    )
