"""A workdir's config record is append-only: a changed rerun is refused, or allowed and kept."""

from __future__ import annotations

import json

import pytest

from cnn_flax import configs
from cnn_flax.training import run_record


def _saved(tmp_path):
    config = configs.get_config("quickstart")
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    return config


def test_the_same_config_resumes(tmp_path):
    config = _saved(tmp_path)
    assert run_record.check(tmp_path, config, step=10, allow_change=False) is None


def test_a_changed_config_is_refused_after_training(tmp_path):
    config = _saved(tmp_path)
    before = (tmp_path / "config.json").read_text()
    old_lr, config.optimizer.lr = config.optimizer.lr, 12.5
    with pytest.raises(
        run_record.ConfigChangeError, match=rf"optimizer.lr: {old_lr} -> 12.5.*allow"
    ):
        run_record.check(tmp_path, config, step=10, allow_change=False)
    assert (tmp_path / "config.json").read_text() == before
    assert not (tmp_path / run_record.HISTORY_FILE).exists()
    # Nothing trained yet (a run stopped before its first checkpoint): nothing to keep.
    assert run_record.check(tmp_path, config, step=0, allow_change=False) is None


def test_an_allowed_change_is_recorded_after_the_first_config(tmp_path):
    config = _saved(tmp_path)
    old_lr, config.optimizer.lr = config.optimizer.lr, 12.5
    change = run_record.check(tmp_path, config, step=10, allow_change=True)
    assert change.changes == [f"optimizer.lr: {old_lr} -> 12.5"]
    assert not (tmp_path / run_record.HISTORY_FILE).exists()  # checked only, nothing written
    run_record.record(tmp_path, change)
    first, second = map(json.loads, (tmp_path / run_record.HISTORY_FILE).read_text().splitlines())
    assert first["step"] == 0 and first["config"]["optimizer"]["lr"] == old_lr
    assert second["step"] == 10 and second["config"]["optimizer"]["lr"] == 12.5
    assert second["changes"] == change.changes
