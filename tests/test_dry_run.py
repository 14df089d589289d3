"""``--dry_run``: the resolved config, the per-epoch schedule and its plot, without compute."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cnn_flax import configs
from cnn_flax.cli import dry_run, train
from cnn_flax.training import optim
from cnn_flax.training.run_plan import make_run_plan

IMAGENET_TRAIN = 1_281_167


def _resnet50_v2(tmp_path):
    config = configs.get_config("resnet50_v2")
    config.data.data_dir = str(tmp_path / "tfds")  # empty: sizes from the published table
    return config


def test_rows_follow_the_trainers_plan_and_schedule():
    config = configs.get_config("resnet50_v2")
    plan = make_run_plan(config, num_train=IMAGENET_TRAIN)
    rows = dry_run.epoch_rows(config, plan)
    assert len(rows) == 600 and rows[-1].last == plan.total_steps == 600 * 1251
    lr = optim.create_learning_rate_schedule(config, plan)
    for row in (rows[0], rows[4], rows[5], rows[300], rows[-1]):
        assert row.lr_first == pytest.approx(float(lr(row.first)), rel=1e-6)
        assert row.lr_last == pytest.approx(float(lr(row.last - 1)), rel=1e-6, abs=1e-9)
        # the EMA's host-side twin of the on-device test (cnn_flax.training.run_plan.EmaPlan)
        assert row.ema_copies + row.ema_averages == plan.ema.updates_in(row.first, row.last)
    assert (rows[0].lr_first, rows[5].lr_first) == pytest.approx((0.005, 0.5))
    # torchvision resets the EMA through the 5 warm-up epochs, then its first update copies too.
    assert [(r.ema_copies, r.ema_averages) for r in rows[4:7]] == [(40, 0), (1, 39), (0, 40)]
    assert rows[6].ema_decay == pytest.approx(1 - 2e-5 * 1024 * 32 / 600)


def test_cli_prints_config_schedule_and_writes_the_plot(tmp_path, capsys, monkeypatch):
    import cnn_flax.data.datasets as datasets
    import cnn_flax.models as models

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run builds no model and reads no data")

    monkeypatch.setattr(models, "create_model", refuse)
    monkeypatch.setattr(datasets, "get_source", refuse)
    workdir = tmp_path / "w"
    argv = [
        "train",
        "--config=resnet50_v2",
        "--dry_run",
        f"--workdir={workdir}",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
    ]
    assert train.cli(argv) == 0
    out = capsys.readouterr().out
    assert "  optimizer.weight_decay_mask = 'no_norm'" in out  # the resolved config
    assert "750,600 updates = 600 epochs; 768,614,400 images seen" in out
    assert "published sizes of imagenet2012" in out
    assert "decay 0.998908 per EMA update" in out
    assert "     5      6,255          0.5     0.499997  copy x1 + avg x39 @0.998908" in out
    png = workdir / "dry_run_schedule.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(workdir / "dry_run_schedule.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 600 and float(table[0]["lr_first"]) == pytest.approx(0.005)
    assert not (workdir / "checkpoints").exists()


def test_without_workdir_the_plot_goes_to_a_printed_folder(tmp_path):
    config = configs.get_config("quickstart")
    lines = []
    png = dry_run.dry_run(config, workdir=None, num_train=1000, echo=lines.append)
    assert png.is_file() and f"Plot: {png}" in lines
    assert any("1,000 train images (--num_train)" in line for line in lines)
    with open(png.with_suffix(".csv")) as f:
        assert np.isfinite([float(r["lr_first"]) for r in csv.DictReader(f)]).all()


def test_unknown_sizes_name_the_fix(tmp_path):
    config = _resnet50_v2(tmp_path)
    config.data.name = f"folder:{tmp_path}"
    with pytest.raises(ValueError, match="--num_train=N"):
        dry_run.dry_run(config, workdir=str(tmp_path), echo=lambda _: None)
