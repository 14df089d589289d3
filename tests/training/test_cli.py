"""``python -m cnn_flax.train`` and ``python -m cnn_flax.evaluate``: user errors are one line."""

from __future__ import annotations

import pytest

from cnn_flax.cli import evaluate, train


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


def test_evaluate_on_a_workdir_without_a_checkpoint_yet_says_so(capsys, tmp_path):
    """A run that has written its config but not its first checkpoint: the line says that, not
    that the folder is no checkpoint and one must be written with train."""
    from cnn_flax.training import trainer
    from cnn_flax.training.config_checks import load_config

    config = load_config("quickstart", [])
    trainer._write_run_files(tmp_path, config, num_classes=10)
    assert evaluate.cli([f"--workdir={tmp_path}"]) == 2
    line = _one_line_error(capsys)
    assert "training workdir with no checkpoint yet" in line, line
    assert "cnn_flax.train" not in line, line


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


def test_a_workdir_that_is_a_file_is_one_line(capsys, tmp_path):
    (tmp_path / "run").write_text("")
    assert train.cli(["train", "--config=quickstart", f"--workdir={tmp_path / 'run'}"]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)


def test_a_live_workdir_is_one_line(capsys, tmp_path):
    from cnn_flax.training import workdir_lock

    held = workdir_lock.acquire(tmp_path)
    try:
        assert train.cli(["train", "--config=quickstart", f"--workdir={tmp_path}"]) == 2
    finally:
        held.release()
    assert "in use by another run" in _one_line_error(capsys)


def test_config_change_flag_reaches_the_trainer(monkeypatch, tmp_path):
    from cnn_flax.training import trainer

    seen = []
    done = trainer.TrainResult(None, step=0, stopped=trainer.StopReason.STOP_AFTER, eval_metrics={})
    monkeypatch.setattr(trainer, "train", lambda *a, **k: seen.append(k) or done)
    argv = ["train", "--config=quickstart", f"--workdir={tmp_path}"]
    assert train.cli(argv) == 0
    assert train.cli([*argv, "--config_change=allow"]) == 0
    assert [k["allow_config_change"] for k in seen] == [False, True]


def test_a_full_disk_while_training_is_one_line(monkeypatch, capsys, tmp_path):
    import errno

    from cnn_flax.training import trainer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))

    monkeypatch.setattr(trainer, "train", full)
    assert train.cli(["train", "--config=quickstart", f"--workdir={tmp_path}"]) == 2
    line = _one_line_error(capsys)
    assert "metrics.jsonl: No space left on device" in line and "rerun" in line, line


def test_an_offline_download_fails_at_once_in_one_line(monkeypatch, capsys, tmp_path):
    """resnet20's recipe trains on CIFAR-10, which tfds downloads: with its host unreachable (a
    closed local port here) the run stops in one line before tfds' minutes of retries."""
    import socket

    import tensorflow_datasets as tfds

    from cnn_flax.data import datasets

    with socket.socket() as probe:  # a port nothing listens on: connecting is refused at once
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()
    monkeypatch.setitem(datasets.DOWNLOAD_HOSTS, "cifar10", closed)

    def no_download(self, *args, **kwargs):
        raise AssertionError("tfds was asked to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    datasets._get_source_cached.cache_clear()
    argv = ["train", "--config=resnet20", f"--workdir={tmp_path / 'w'}"]
    assert train.cli([*argv, f"--config.data.data_dir={tmp_path / 'tfds'}"]) == 2
    line = _one_line_error(capsys)
    assert "cifar10 is not prepared" in line and "cnn_flax.data.prepare cifar10" in line, line
    assert "refused" in line.lower(), line
    datasets._get_source_cached.cache_clear()


@pytest.mark.parametrize(("signum", "code"), [(15, 143), (2, 130)])
def test_a_run_stopped_by_a_signal_exits_128_plus_it(signum, code, monkeypatch, capsys, tmp_path):
    from cnn_flax.training import trainer

    stopped = trainer.TrainResult(
        None, step=2, stopped=trainer.StopReason.SIGNAL, eval_metrics={}, signal=signum
    )
    monkeypatch.setattr(trainer, "train", lambda *a, **k: stopped)
    assert train.cli(["train", "--config=quickstart", f"--workdir={tmp_path}"]) == code
    assert capsys.readouterr().out == ""  # the trainer's own line is the only one


def test_train_help_exits_0_and_lists_recipes_and_keys(capsys):
    assert train.cli(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--workdir" in out and "__main__" not in out
    recipes = next(line for line in out.splitlines() if line.startswith("Recipes (--config=NAME):"))
    assert "quickstart" in recipes and "finetune" in recipes and "resnet50" in out
    assert "--config=NAME --help" in out
    assert train.cli(["train", "--config=quickstart", "--config.optimizer.lr=0.3", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--config.optimizer.lr=0.3\n" in out and "--config.data.name='digits/16'" in out


def test_evaluate_help_is_for_users(capsys):
    with pytest.raises(SystemExit) as exit_:
        evaluate.cli(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--workdir" in out and "absl" not in out and "argparse" not in out, out
