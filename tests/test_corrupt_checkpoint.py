"""A damaged checkpoint is one short line from ``evaluate`` and ``predict``, not pages of spec."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cnn_flax.cli import evaluate, predict
from cnn_flax.training import checkpoint


def _damaged(directory, *, model: str, num_classes: int):
    variables = {"params": {"w": np.ones((3,), np.float32)}, "batch_stats": {}}
    checkpoint.save_variables(
        directory, variables, meta={"model": model, "num_classes": num_classes}
    )
    for manifest in directory.rglob("manifest.ocdbt"):
        manifest.write_bytes(b"damaged")
    return directory


def _one_short_line(capsys, path) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Cannot read checkpoint"), err
    assert str(path) in err[0] and "spec" not in err[0] and len(err[0]) < 500, err[0]
    return err[0]


def test_evaluate_on_a_damaged_checkpoint_is_one_line(tmp_path, capsys):
    ckpt = _damaged(tmp_path / "ckpt", model="resnet20", num_classes=10)
    assert evaluate.cli(["--config=quickstart", f"--checkpoint={ckpt}"]) == 2
    _one_short_line(capsys, ckpt)


def test_predict_on_a_damaged_checkpoint_is_one_line(tmp_path, capsys):
    ckpt = _damaged(tmp_path / "ckpt", model="resnet18", num_classes=1000)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    assert predict.main([f"--checkpoint={ckpt}", str(image)]) == 2
    _one_short_line(capsys, ckpt)
