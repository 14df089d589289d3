"""Small datasets shared by the data tests (built once per session)."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest


def data_config(name: str, data_dir: str, **fields) -> ml_collections.ConfigDict:
    """The base config's data section at 32 px; augmentation off unless given."""
    from cnn_flax.configs.base import get_data_config

    config = get_data_config()
    augment = dict(inception_crop=False, flip=False, pad_crop=False, mixup_alpha=0.0)
    augment.update(fields.pop("augment", {}))
    config.update({"name": name, "data_dir": data_dir, "image_size": 32, **fields})
    config.augment.update(augment)
    return config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def digits_dir(data_dir) -> str:
    """A data dir holding the prepared digits dataset (~3 s)."""
    from cnn_flax.data import datasets

    datasets.get_source(data_config("digits", data_dir))
    return data_dir


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory) -> str:
    """A folder dataset of 3 classes x 7 small random JPEGs (and one PNG) in train/ and val/."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 7), ("val", 3)):
        for c in range(3):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(40, 80, size=2)
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                fmt = "PNG" if (i == 0 and c == 0) else "JPEG"
                Image.fromarray(pixels).save(folder / f"{i}.{fmt.lower()}", format=fmt)
    return str(root)
