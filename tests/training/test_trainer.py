"""The training loop on 8 simulated CPU devices with the tiny model and the fake data set."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal

import chex
import jax
import numpy as np
import pytest

from cnn_flax.training import checkpoint, run_record, trainer, workdir_lock
from tests.training import fakes


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted 6-step run with EMA; several tests inspect it (one compile)."""
    workdir = tmp_path_factory.mktemp("full")
    config = fakes.tiny_config(ema_decay=0.9)
    data = fakes.FakeData()
    compiles = _CompileCounter()
    printed = io.StringIO()
    with compiles, contextlib.redirect_stdout(printed):
        result = trainer.train(config, workdir, data_source=data, show_progress=False)
    return workdir, config, result, data, compiles.count, printed.getvalue()


class _CompileCounter(logging.Handler):
    """Counts XLA compilations of the train step (jax_log_compiles logs each one)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        message = record.getMessage()
        if "train_step" in message and "Finished XLA compilation" in message:
            self.count += 1

    def __enter__(self):
        self._previous = jax.config.jax_log_compiles
        jax.config.update("jax_log_compiles", True)
        logging.getLogger("jax").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("jax").removeHandler(self)
        jax.config.update("jax_log_compiles", self._previous)


def test_run_writes_workdir_and_compiles_once(full_run):
    workdir, _, result, _, compiles, printed = full_run
    assert result.stopped is trainer.StopReason.FINISHED and result.step == 6
    assert compiles == 1, f"the train step compiled {compiles} times"
    # Every start-up phase that takes seconds is announced before it starts.
    phases = [line for line in printed.splitlines() if not line.startswith("Note:")]
    assert phases[:3] == [
        "Reading data set digits/16 ...",
        f"Initialising {fakes.TINY_MODEL} ...",
        f"Compiling the train step ({fakes.TINY_MODEL}) ...",
    ], printed
    for name in ("config.json", "model.json", "metrics.jsonl", "tensorboard"):
        assert (workdir / name).exists(), name
    assert json.loads((workdir / "config.json").read_text())["model"] == fakes.TINY_MODEL
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    logged = [r["step"] for r in train_records]
    # Every log boundary, plus eval/checkpoint points where the loop settles its metrics early.
    assert logged == sorted(set(logged)) and {2, 4, 6} <= set(logged)
    for key in ("loss", "lr", "grad_norm", "img_per_s", "step_time_ms", "gflops_per_s"):
        assert np.isfinite(train_records[-1][key]), key
    assert {r["step"] for r in records if r["split"] == "eval"} == {3, 6}
    assert any(p.name.startswith("events") for p in (workdir / "tensorboard").iterdir())
    assert checkpoint.CheckpointManager(workdir, keep=2, keep_best=False).all_steps() == [3, 6]


def test_eval_counts_every_example_once(full_run):
    _, config, result, data, _, _ = full_run
    assert fakes.NUM_EVAL % config.batch_size != 0
    assert result.eval_metrics["eval_num_examples"] == fakes.NUM_EVAL
    assert result.eval_metrics["eval_ema_num_examples"] == fakes.NUM_EVAL
    assert 0.0 <= result.eval_metrics["eval_top1"] <= result.eval_metrics["eval_top5"] <= 1.0


def test_load_variables_from_workdir(full_run):
    workdir, _, result, _, _, _ = full_run
    raw = checkpoint.load_variables(workdir)
    chex.assert_trees_all_equal(raw["params"], fakes.params_of(result.state))
    ema = checkpoint.load_variables(workdir / "checkpoints" / "6", ema=True)
    chex.assert_trees_all_equal(ema["params"], jax.device_get(result.state.ema_params))
    assert checkpoint.find_model_meta(workdir / "checkpoints" / "6")["model"] == fakes.TINY_MODEL


def test_evaluate_matches_training_eval(full_run, tmp_path):
    from cnn_flax.cli import evaluate

    workdir, config, result, data, _, _ = full_run
    got = evaluate.evaluate(config, workdir, data_source=data)
    for key in ("top1", "top5", "ema_top1", "num_examples"):
        assert got[key] == pytest.approx(result.eval_metrics["eval_" + key]), key
    assert got["step"] == 6  # the step evaluated, which the command line names
    # A variables checkpoint (what the torchvision converter writes) of the same weights.
    meta = {"model": fakes.TINY_MODEL, "num_classes": fakes.NUM_CLASSES}
    checkpoint.save_variables(tmp_path / "vars", checkpoint.load_variables(workdir), meta=meta)
    got = evaluate.evaluate(config, tmp_path / "vars", data_source=data)
    assert got["top1"] == pytest.approx(result.eval_metrics["eval_top1"])
    assert "ema_top1" not in got and "step" not in got


def test_rerun_on_a_finished_workdir_says_so_and_changes_nothing(full_run, capsys):
    workdir, config, _, _, _, _ = full_run
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    again = trainer.train(config, workdir, data_source=fakes.FakeData(), show_progress=False)
    assert again.stopped is trainer.StopReason.FINISHED and again.step == 6
    out = capsys.readouterr().out
    assert f"Workdir {workdir} already finished at step 6 (total_steps 6, 1.50 epochs)" in out, out
    assert "Compiling" not in out
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before


def test_sigterm_then_resume_equals_uninterrupted(full_run, tmp_path, capsys):
    _, config, uninterrupted, _, _, _ = full_run

    def send_sigterm(step):
        if step == 1:  # while step 2's batch is being fetched
            os.kill(os.getpid(), signal.SIGTERM)

    first = trainer.train(
        config, tmp_path, data_source=fakes.FakeData(on_step=send_sigterm), show_progress=False
    )
    assert (
        first.stopped is trainer.StopReason.SIGNAL
        and first.step == 2
        and first.signal == signal.SIGTERM
    )
    assert checkpoint.training_step_dir(tmp_path).name == "2"
    assert "Stopped at step 2 on a stop signal" in capsys.readouterr().out
    resumed = trainer.train(
        config, tmp_path, data_source=fakes.FakeData(), show_progress=False, profile=True
    )
    assert resumed.stopped is trainer.StopReason.FINISHED and resumed.step == 6
    assert f"Resuming from step 2 (workdir {tmp_path.resolve()})." in capsys.readouterr().out
    assert any(p.is_file() for p in (tmp_path / "profile").rglob("*")), "no profiler trace"
    chex.assert_trees_all_equal(
        fakes.params_of(resumed.state), fakes.params_of(uninterrupted.state)
    )
    chex.assert_trees_all_equal(
        jax.device_get(resumed.state.ema_params), jax.device_get(uninterrupted.state.ema_params)
    )


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(full_run, tmp_path, capsys):
    """Step 6's checkpoint is damaged on disk: the run says so, resumes from step 3, trains the
    last three steps again and ends with the uninterrupted run's parameters."""
    workdir, config, uninterrupted, _, _, _ = full_run
    shutil.copytree(workdir, tmp_path / "w")
    for manifest in (tmp_path / "w" / "checkpoints" / "6").rglob("manifest.ocdbt"):
        manifest.write_bytes(b"damaged")
    resumed = trainer.train(
        config, tmp_path / "w", data_source=fakes.FakeData(), show_progress=False
    )
    out = capsys.readouterr().out
    assert "Skipped checkpoint step 6: DATA_LOSS" in out, out
    assert "Resuming from step 3 instead, the newest that restores." in out, out
    assert "moved to" in out and (tmp_path / "w" / "checkpoints" / "6.unrestorable").is_dir()
    assert resumed.stopped is trainer.StopReason.FINISHED and resumed.step == 6
    chex.assert_trees_all_equal(
        fakes.params_of(resumed.state), fakes.params_of(uninterrupted.state)
    )


def test_eight_devices_match_one_device(tmp_path):
    """Global BatchNorm: the function computed does not depend on the device count; per-device
    BatchNorm (same checkpoint layout) does."""
    config = fakes.tiny_config(total_steps=3, eval_every_steps=100, checkpoint_every_steps=0)
    runs = {}
    for n, bn_mode in ((1, "global"), (8, "global"), ("8pd", "per_device")):
        config.bn_mode = bn_mode
        runs[n] = trainer.train(
            config,
            tmp_path / str(n),
            data_source=fakes.FakeData(),
            devices=jax.devices()[: 1 if n == 1 else 8],
            show_progress=False,
        )
    chex.assert_trees_all_equal_shapes_and_dtypes(runs[8].state, runs["8pd"].state)
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(
            fakes.params_of(runs[8].state), fakes.params_of(runs["8pd"].state), atol=1e-4
        )
    chex.assert_trees_all_close(
        fakes.params_of(runs[1].state), fakes.params_of(runs[8].state), atol=1e-5, rtol=1e-5
    )
    chex.assert_trees_all_close(
        jax.device_get(runs[1].state.batch_stats),
        jax.device_get(runs[8].state.batch_stats),
        atol=1e-5,
        rtol=1e-5,
    )


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = fakes.tiny_config(
        total_steps=12, checkpoint_every_steps=1, eval_every_steps=100, log_every_steps=4
    )
    config.optimizer.lr = 1e30
    expected = r"loss or gradient.* became non-finite .* at step \d+;.* step \d+, is kept"
    with pytest.raises(trainer.TrainingError, match=expected):
        trainer.train(config, tmp_path, data_source=fakes.FakeData(), show_progress=False)
    saved = checkpoint.load_variables(tmp_path)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved["params"]))


def test_a_state_that_goes_non_finite_is_never_saved(tmp_path, monkeypatch):
    """The loss stays finite while BatchNorm's running variance becomes inf (what a diverging
    learning rate does to the quickstart): the run stops at that step and saves nothing."""
    initializer = trainer._state_initializer

    def overflowing(config, model, tx):
        init = initializer(config, model, tx)

        def init_state():
            state = init()
            return state.replace(params=fakes.overflowing_batch_norm(state.params))

        return init_state

    monkeypatch.setattr(trainer, "_state_initializer", overflowing)
    config = fakes.tiny_config(checkpoint_every_steps=1, eval_every_steps=100, log_every_steps=4)
    expected = r"BatchNorm statistics \(batch_stats\) became non-finite \(inf or nan\) at step 1;"
    expected += ".*no checkpoint had been saved yet"
    with pytest.raises(trainer.TrainingError, match=expected):
        trainer.train(config, tmp_path, data_source=fakes.FakeData(), show_progress=False)
    assert checkpoint.training_step_dir(tmp_path) is None


def test_mismatched_checkpoint_is_refused_and_nothing_overwritten(full_run, tmp_path):
    workdir, config, _, _, _, _ = full_run
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    config = fakes.tiny_config(**{"model_overrides.width": 16, "total_steps": 9})
    with pytest.raises(checkpoint.CheckpointError, match="does not match"):
        trainer.train(
            config,
            workdir,
            data_source=fakes.FakeData(),
            show_progress=False,
            allow_config_change=True,  # past the config check, to the checkpoint's own
        )
    after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    assert after == before


def test_a_changed_config_on_a_trained_workdir_is_refused(full_run):
    workdir, config, _, _, _, _ = full_run
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    config = fakes.tiny_config(ema_decay=0.9, total_steps=9)
    with pytest.raises(run_record.ConfigChangeError, match="total_steps: 6 -> 9.*allow"):
        trainer.train(config, workdir, data_source=fakes.FakeData(), show_progress=False)
    after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    assert after == before


def test_a_second_run_on_a_live_workdir_is_refused(tmp_path, capsys):
    held = workdir_lock.acquire(tmp_path)  # as a live run on this workdir would
    try:
        with pytest.raises(
            workdir_lock.WorkdirError, match=f"in use by another run .process {os.getpid()}"
        ):
            trainer.train(fakes.tiny_config(), tmp_path, data_source=fakes.FakeData())
    finally:
        held.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing else written
    assert "Reading data set" not in capsys.readouterr().out  # refused before any long work


def test_unreadable_checkpoint_is_refused(tmp_path):
    step_dir = tmp_path / "checkpoints" / "3" / "state"
    step_dir.mkdir(parents=True)
    (step_dir / "garbage").write_text("not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError):
        trainer.train(fakes.tiny_config(), tmp_path, data_source=fakes.FakeData())
    with pytest.raises(checkpoint.CheckpointError, match="Cannot read"):
        checkpoint.load_variables(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bn_mode": "sync"}, "bn_mode"),
        ({"dtype": "float64"}, "dtype"),
        ({"batch_size": 12}, "not divisible by the 8 devices"),
    ],
)
def test_bad_config_fails_before_compute(change, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        trainer.train(fakes.tiny_config(**change), tmp_path, data_source=fakes.FakeData())
    assert not (tmp_path / "checkpoints").exists()


def test_gradient_accumulation_counts_updates(tmp_path):
    config = fakes.tiny_config(
        grad_accum_steps=2, total_steps=2, eval_every_steps=2, checkpoint_every_steps=0
    )
    result = trainer.train(config, tmp_path, data_source=fakes.FakeData(), show_progress=False)
    assert result.step == 2 and int(result.state.step) == 4  # 2 updates of 2 micro-batches
    assert checkpoint.training_step_dir(tmp_path).name == "4"
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 2
