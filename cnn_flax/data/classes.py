"""Human-readable ImageNet-1k class names in label order (no TensorFlow needed)."""

from __future__ import annotations

import functools
from pathlib import Path

_CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")


@functools.cache
def _read() -> tuple[str, ...]:
    names = tuple(_CLASSES_FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != 1000:
        raise RuntimeError(f"{_CLASSES_FILE} holds {len(names)} names, expected 1000")
    return names


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, index = label (torchvision's list, the same order as
    tfds imagenet2012's sorted WordNet ids)."""
    return list(_read())
