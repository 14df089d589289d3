"""A miniature ImageNet in the exact manual-download layout, for the real tfds builder.

ILSVRC2012_img_train.tar holds one tar per class (n0xxxxxxx.tar of n0xxxxxxx_<i>.JPEG) and
ILSVRC2012_img_val.tar holds ILSVRC2012_val_00000001.JPEG, ... Each image is a flat colour
that identifies it after any crop: train images have the grey level of their class, validation
image i the level VAL_LEVEL(i).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

SYNSET_LINES = (0, 1, 500)  # lines of tfds' labels.txt = the labels of the train classes
PER_CLASS = 3
NUM_VAL = 6


def class_level(label_position: int) -> int:
    return 40 + 80 * label_position


def val_level(index: int) -> int:
    return 20 + 35 * index  # index 1..NUM_VAL


def _jpeg(level: int, rng: np.random.Generator) -> bytes:
    from PIL import Image

    h, w = rng.integers(40, 64, size=2)
    buffer = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), level, np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_manual_dir(manual_dir: Path, synsets: list[str]) -> None:
    """Writes the two archives; `synsets` are the tfds labels.txt lines (WordNet ids)."""
    rng = np.random.default_rng(0)
    manual_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(manual_dir / "ILSVRC2012_img_train.tar", "w") as train:
        for position, line in enumerate(SYNSET_LINES):
            synset = synsets[line]
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as inner:
                for i in range(1, PER_CLASS + 1):
                    _add(inner, f"{synset}_{i}.JPEG", _jpeg(class_level(position), rng))
            _add(train, f"{synset}.tar", buffer.getvalue())
    with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w") as val:
        for i in range(1, NUM_VAL + 1):
            _add(val, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(val_level(i), rng))
