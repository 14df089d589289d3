"""``python -m cnn_flax.train`` and ``python -m cnn_flax.evaluate``: user errors are one line."""

from __future__ import annotations

import pytest

from cnn_flax import evaluate, train


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config=quickstrat"], "Did you mean: quickstart"),
        (["--config=quickstart", "--config.batch_sise=8"], "batch_sise"),
        (["--config=quickstart", "--config.batch_size=many"], "batch_size"),
        (["--config=quickstart", "--config.bn_mode=sync"], "bn_mode"),
        (["--config=quickstart"], "--workdir is required"),
    ],
)
def test_train_user_errors_are_one_line(args, message, capsys, tmp_path):
    assert train.cli(["train", *args]) == 2
    assert message in _one_line_error(capsys)
    assert not any(tmp_path.iterdir())


def test_flags_of_an_earlier_call_do_not_leak_into_the_next(capsys, tmp_path):
    first = ["train", "--config=quickstart", "--config.bn_mode=sync", f"--workdir={tmp_path}"]
    assert train.cli(first) == 2
    capsys.readouterr()
    assert train.cli(["train", "--config=quickstart"]) == 2
    assert "--workdir is required" in _one_line_error(capsys)


def test_resnet50_without_imagenet_says_how_to_prepare(capsys, tmp_path):
    argv = [
        "train",
        "--config=resnet50",
        f"--workdir={tmp_path / 'w'}",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
    ]
    assert train.cli(argv) == 2
    line = _one_line_error(capsys)
    assert "ILSVRC2012_img_train.tar" in line, line
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_evaluate_user_errors_are_one_line(capsys, tmp_path):
    assert evaluate.cli(["--config=quickstart", f"--checkpoint={tmp_path}"]) == 2
    assert "model.json" in _one_line_error(capsys)


@pytest.mark.slow
def test_quickstart_reaches_97_percent(tmp_path):
    """The embedded default trains on the offline digits data to >= 97% (about a minute of 2 CPU
    cores when the machine is otherwise idle), and ``evaluate`` reproduces its number."""
    import json
    import os
    import subprocess
    import sys

    workdir = tmp_path / "quickstart"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the user's real devices
    cmd = [sys.executable, "-m", "cnn_flax.train", "--config=quickstart", f"--workdir={workdir}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["split"] == "eval"][-1]
    assert final["top1"] >= 0.97, final
    assert final["num_examples"] == 360  # the whole digits test split, each example once
    cmd = [sys.executable, "-m", "cnn_flax.evaluate", f"--workdir={workdir}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"top-1 {100 * final['top1']:.2f}%" in done.stdout, done.stdout
