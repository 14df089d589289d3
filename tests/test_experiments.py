"""Every study runs end to end for a handful of steps, through the real training system."""

import csv

import pytest

from experiments import run
from experiments.study import set_path


@pytest.mark.slow
@pytest.mark.parametrize("name", run.STUDIES)
def test_study_runs_a_few_steps(name, tmp_path):
    study = run.load_study(name)
    # The baseline and the last arm (usually the most different one), one seed, 3 steps.
    last = len(study.variants) - 1
    args = run.parse_args(
        [name, "--steps=3", "--seeds=0", "--batch-size=16", f"--variants=0,{last}"]
        + [f"--out={tmp_path}"]
    )
    run.run_study(study, args)
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == [study.variants[0].label, study.variants[last].label]
    for row in rows:
        assert int(row["steps"]) == 3
        assert int(row["params"]) > 0 and float(row["mmacs"]) > 0
        assert 0.0 <= float(row["eval_top1"]) <= 1.0
    assert (tmp_path / "plot.png").stat().st_size > 1000
    assert "| variant |" in (tmp_path / "summary.md").read_text()


def test_arms_differ_from_the_baseline_in_what_they_claim():
    for name in run.STUDIES:
        study = run.load_study(name)
        labels = [v.label for v in study.variants]
        assert len(set(labels)) == len(labels), name
        assert all(v.changes for v in study.variants), name


def test_set_path_refuses_unknown_fields():
    from experiments.study import digits_config

    config = digits_config()
    set_path(config, "model_overrides.width", 8)  # models' own options may be added
    assert config.model_overrides.width == 8
    with pytest.raises(KeyError, match="no field"):
        set_path(config, "optimizer.lrr", 0.1)


def test_unknown_study_is_named():
    with pytest.raises(SystemExit, match="unknown study"):
        run.load_study("resnet_vs_vit")
