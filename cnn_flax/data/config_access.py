"""Reads the data config tolerantly: fields missing from a ConfigDict fall back to defaults."""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "data_dir": None,
    "train_split": None,
    "eval_split": None,
    "image_size": 224,
    "eval_crop_ratio": 0.875,
    "shuffle_buffer": 16_384,
    "cache": False,
    "num_parallel_calls": -1,
    "prefetch": 2,
}
AUGMENT_DEFAULTS: dict[str, Any] = {
    "inception_crop": True,
    "flip": True,
    "pad_crop": False,
    "mixup_alpha": 0.0,
    "cutmix_alpha": 0.0,
    "autoaugment": None,
}


def get(config: Any, name: str) -> Any:
    """`config.name` (ConfigDict, dict or object); DEFAULTS[name] when absent or a placeholder."""
    value = config.get(name) if hasattr(config, "get") else getattr(config, name, None)
    return DEFAULTS.get(name) if value is None else value


def augment(config: Any, name: str) -> Any:
    """`config.augment.name` with AUGMENT_DEFAULTS."""
    aug = config.get("augment") if hasattr(config, "get") else getattr(config, "augment", None)
    value = None
    if aug is not None:
        value = aug.get(name) if hasattr(aug, "get") else getattr(aug, name, None)
    return AUGMENT_DEFAULTS.get(name) if value is None else value


def randaugment(config: Any) -> tuple[int, int]:
    """(num_layers, magnitude) of RandAugment; num_layers 0 means off."""
    ra = augment(config, "randaugment")
    if ra is None:
        return 0, 9
    get_ = ra.get if hasattr(ra, "get") else lambda k: getattr(ra, k, None)
    return int(get_("num_layers") or 0), int(
        get_("magnitude") if get_("magnitude") is not None else 9
    )
