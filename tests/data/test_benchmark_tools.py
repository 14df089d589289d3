"""make_fake_images and the data benchmark CLI, at toy sizes. Runtime ~5 s (+~20 s torch)."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from cnn_flax.data import make_fake_images
from cnn_flax.perf import input_pipeline as benchmark


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("fake")
    make_fake_images.main([f"--out={out}", "--classes=2", "--per-class=3"])
    return str(out)


def test_fake_images_are_imagenet_like_jpegs(fake_dir):
    import pathlib

    files = sorted(pathlib.Path(fake_dir).glob("class_*/*.JPEG"))
    assert len(files) == 6 and {f.parent.name for f in files} == {"class_000", "class_001"}
    for file in files:
        with Image.open(file) as image:
            assert image.format == "JPEG" and 400 <= image.width <= 500
            assert 0.6 * image.width <= image.height <= 0.95 * image.width


@pytest.mark.parametrize(
    "extra,lines",
    [
        ([], ["img/s", "bare tf.data img/s"]),
        pytest.param(
            ["--compare=torch", "--skip-bare"],
            ["img/s", "torch img/s", "ratio"],
            marks=[pytest.mark.torch, pytest.mark.slow],
        ),
    ],
)
def test_benchmark_prints_rates(fake_dir, tmp_path, capsys, extra, lines):
    benchmark.main(
        [
            f"--dataset=folder:{fake_dir}",
            "--batch-size=2",
            "--steps=2",
            "--warmup=1",
            "--image-size=32",
            f"--data-dir={tmp_path}",
            *extra,
        ]
    )
    out = capsys.readouterr().out
    for line in lines:
        assert re.search(rf"^{re.escape(line)}: [0-9.]+$", out, re.M), out
