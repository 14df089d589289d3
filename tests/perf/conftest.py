"""A tiny JPEG folder for the real-data benchmark tests."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_jpegs(tmp_path_factory) -> str:
    """2 classes x 6 random 40-60 px JPEGs in <root>/<class>/."""
    from PIL import Image

    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir()
        for i in range(6):
            h, w = rng.integers(40, 60, size=2)
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.jpg", format="JPEG")
    return str(root)
