"""Starts that would look like success and are not are refused (or named) before any work."""

from __future__ import annotations

import math

import pytest

from cnn_flax.configs import get_config
from cnn_flax.training import trainer
from tests.training import fakes


def _finetune_config(**changes):
    config = get_config(f"finetune:{fakes.TINY_MODEL}")
    base = fakes.tiny_config()
    for key in ("total_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
        config[key] = base[key]
    config.data.image_size = fakes.SIZE
    config.data.cache = False
    config.update(changes)
    return config


def test_finetune_without_weights_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"init_from is not set.*--config=test_tiny_cnn"):
        trainer.train(_finetune_config(), tmp_path, data_source=fakes.FakeData())
    assert not (tmp_path / "checkpoints").exists()
    assert "Compiling" not in capsys.readouterr().out


def test_finetune_from_scratch_on_purpose_starts(tmp_path):
    config = _finetune_config()
    config.finetune.from_scratch = True
    config.total_steps = 1
    result = trainer.train(config, tmp_path, data_source=fakes.FakeData())
    assert result.step == 1


def test_batch_larger_than_the_training_split_is_refused(tmp_path):
    config = fakes.tiny_config(batch_size=128)  # the fake split holds 64
    with pytest.raises(ValueError, match=r"batch_size 128 is larger than the training split"):
        trainer.train(config, tmp_path, data_source=fakes.FakeData())
    assert not (tmp_path / "checkpoints").exists()


def test_a_non_finite_evaluation_loss_fails_the_run(tmp_path, monkeypatch):
    class NanEvaluator:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, state):
            return {"top1": 0.25, "top5": 1.0, "loss": math.inf, "num_examples": 37.0}

    monkeypatch.setattr(trainer, "Evaluator", NanEvaluator)
    config = fakes.tiny_config(total_steps=3, checkpoint_every_steps=0)
    with pytest.raises(trainer.TrainingError, match=r"evaluation loss \(eval_loss\) is non-fin"):
        trainer.train(config, tmp_path, data_source=fakes.FakeData(), show_progress=False)
    assert not (tmp_path / "checkpoints" / "3").exists()


def test_an_average_that_cannot_move_in_the_run_is_named(tmp_path, capsys):
    config = fakes.tiny_config(ema_decay=0.9999, total_steps=2, eval_every_steps=2)
    trainer.train(config, tmp_path, data_source=fakes.FakeData(), show_progress=False)
    out = capsys.readouterr().out
    assert "half-life of 6,931 updates, longer than this run's 2" in out, out


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    from cnn_flax.cli import train

    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("")
    monkeypatch.setenv("TFDS_DATA_DIR", str(not_a_folder))
    code = train.cli(["train", "--config=quickstart", f"--workdir={tmp_path / 'w'}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "a file, not a folder" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "w"]  # no tfds lock beside it


def test_out_of_memory_is_one_line_naming_the_batch(tmp_path, monkeypatch, capsys):
    import jax

    from cnn_flax.cli import train

    def out_of_memory(*args, **kwargs):
        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 12.50GiB.\nmore lines"
        )

    monkeypatch.setattr(trainer, "train", out_of_memory)
    code = train.cli(["train", "--config=quickstart", f"--workdir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "Out of memory at batch_size 32" in err and "grad_accum_steps=2" in err, err
