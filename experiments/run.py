"""Runs a study: ``python -m experiments.run NAME [--dataset=...] [--steps=...] [--seeds=...]``.

Every arm of the study is trained for every seed through the normal training system
(:func:`cnn_flax.training.trainer.train`),
on the same data, steps and batch size. The runner writes into
the study folder (or ``--out``):

  results.csv   one row per (variant, seed): params, GMACs per image, final train loss, top-1
  curves.csv    training loss and accuracy against step, per (variant, seed)
  summary.md    mean and spread over seeds per variant (pasted into the study README)
  plot.png      curves or bars, as the study asks

At small scale (the default) it runs on CPU in minutes on the offline ``digits`` data set.
``--scale=full`` takes the study's full-scale preset (:class:`experiments.study.FullScale`: a real
data set at native resolution, the paper's epochs, recipe and seeds) and writes into
``STUDY/full/``; ``--plan`` builds and validates every arm's config at the chosen scale and prints
the runs and an accelerator-hours estimate without training. Any flag given explicitly overrides
the scale's value.

Before every evaluation the BatchNorm statistics of models with BatchNorm are re-estimated on
``--bn-reestimate-batches`` training batches (:mod:`cnn_flax.training.bn_reestimate`), so that a
short run is not judged by running averages that still remember their start; ``0`` turns it off.

From the repository root: ``python -m experiments.run NAME``; from any other folder:
``python PATH/TO/REPO/experiments/run.py NAME``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import pathlib
import re
import statistics
import sys
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
from tqdm import tqdm

if not __package__:  # run as a file (python PATH/experiments/run.py) from any folder
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments.study import Study, Variant, match_stored_size, set_path

STUDIES = (
    "degradation", "separable", "inception", "vgg_kernels", "compound_scaling", "vit_vs_resnet",
    "finetune",
)  # fmt: skip
HERE = pathlib.Path(__file__).resolve().parent


def load_study(name: str) -> Study:
    if name not in STUDIES:
        raise SystemExit(f"error: unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return importlib.import_module(f"experiments.{name}.config").STUDY


def build_config(
    study: Study,
    variant: Variant,
    *,
    seed: int,
    args: argparse.Namespace,
    steps: int | None = None,
    lr: float | None = None,
    held_out: bool = False,
):
    """The arm's training config for one seed. ``steps`` (default ``args.steps``) is the arm's
    own budget under ``--equal-compute``; ``lr`` sets ``optimizer.lr`` (the sweep's rate);
    ``held_out`` trains on the first 80% of the training split and evaluates on the rest, so a
    learning rate is never picked on the test split."""
    steps = steps or args.steps
    full = study.full if getattr(args, "scale", "small") == "full" else None
    size = args.image_size or (full.image_size if full is not None else None)
    config = study.base_config(dataset=args.dataset, image_size=size)
    changes = dict(variant.changes)
    if full is not None:
        changes.update(full.changes)
        changes.update(full.arm_changes.get(variant.label, {}))
    if args.image_size is not None and "data.image_size" in changes:
        del changes["data.image_size"]  # an explicit --image-size wins over the preset's
    for path, value in changes.items():
        if path == "data.image_scale":
            # Relative, so that the study keeps its meaning at any --image-size.
            config.data.image_size = round(config.data.image_size * value)
        else:
            set_path(config, path, value)
    match_stored_size(config)
    message = patch_pitfall(config)
    if message:
        warnings.warn(message, stacklevel=2)
    config.seed = seed
    config.total_steps = steps
    if full is not None:
        # Epoch-valued schedule fields count in num_epochs (configs/base.py): the preset's epochs,
        # so that the recipe's boundaries (e.g. 32k and 48k of 64k iterations) fall where its
        # paper put them; another --steps compresses the whole schedule.
        config.num_epochs = float(full.epochs)
    if lr is not None:
        config.optimizer.lr = lr
    if held_out:
        config.data.train_split, config.data.eval_split = held_out_splits(config.data.train_split)
    config.batch_size = args.batch_size
    if args.warmup_epochs is not None:
        config.schedule.warmup_epochs = args.warmup_epochs
    # Evaluated with statistics of the current weights, not running averages that lag behind
    # them (0: off; models without BatchNorm, and frozen fine-tunes, are evaluated as trained).
    config.bn_reestimate_batches = int(getattr(args, "bn_reestimate_batches", 0) or 0)
    # Evaluate halfway and at the end (each evaluation re-estimates BatchNorm statistics first);
    # checkpoint only at the end (the workdir is temporary, so no intermediate saves).
    config.eval_every_steps = max(1, steps // 2)
    config.log_every_steps = max(1, steps // 30)
    config.checkpoint_every_steps = 0
    # Seeds after the first reuse the compiled steps of the same arm.
    config.compilation_cache_dir = str(args.cache_dir)
    return config


HELD_OUT_PERCENT = 20  # of the training split, for picking a learning rate


def held_out_splits(train_split: str | None) -> tuple[str, str]:
    """What an lr-sweep run trains on and scores on: the arm's own amount of data, never an image
    it is later evaluated on.

    A prefix of ``train`` that stays clear of its last fifth (a small-data CPU design such as
    ``train[:10%]``, 144 images) trains on exactly its own images and is scored on ``train``'s
    held-out last fifth (287 images). ``None`` or ``"train"`` trains on the first 80%. Any other
    percent slice is cut inside itself (``train[50%:100%]`` -> ``train[50%:90%]`` and
    ``train[90%:100%]``); other forms are refused: a rate picked on other data would not be the
    arm's.
    """
    split = train_split or "train"
    keep = 100 - HELD_OUT_PERCENT
    held_out = f"train[{keep}%:]"
    if split == "train":
        return f"train[:{keep}%]", held_out
    prefix = re.fullmatch(r"train\[:(\d+(?:\.\d+)?)%\]", split)
    if prefix and float(prefix.group(1)) <= keep:
        return split, held_out
    match = re.fullmatch(r"train\[(\d*(?:\.\d+)?)%?:(\d*(?:\.\d+)?)%\]", split)
    if not match:
        raise SystemExit(
            f"error: --lr-sweep cannot hold out part of train_split={split!r}; use 'train' or "
            "a percent slice like 'train[:10%]'"
        )
    start = float(match.group(1) or 0.0)
    stop = float(match.group(2))
    cut = start + (stop - start) * keep / 100
    first = f"train[{f'{start:g}%' if start else ''}:{cut:g}%]"
    return first, f"train[{cut:g}%:{stop:g}%]"


# Families that embed non-overlapping patches with one linear map (a "patchify" stem).
PATCH_FAMILIES = ("vit", "swin", "convnext")
DIGITS_NATIVE_PX = 8


def patch_pitfall(config) -> str | None:
    """A warning when a patch model reads the digits enlarged past their native 8 pixels.

    ``digits/N`` stores each 8x8 digit enlarged N/8 times, so a patch no larger than that factor
    sees one grey level: the patch embedding is then rank one, and with ImageNet normalisation
    every token is the same vector times a large offset, next to which a small position embedding
    is invisible. A ViT so trained cannot tell where a patch is (issue 18: 21% top-1, no better
    than a position-blind histogram classifier). Use the native 8 px, or background-zero
    normalisation (``data.mean=0, data.std=255``, which the issue measured at 88.9% for the same
    ViT in 200 steps).
    """
    from cnn_flax.models import model_info

    name = str(config.data.name)
    size = int(config.data.image_size)
    if not name.startswith("digits") or size <= DIGITS_NATIVE_PX:
        return None
    try:
        family = model_info(config.model).family
    except (KeyError, ValueError):
        return None
    if family not in PATCH_FAMILIES:
        return None
    overrides = config.model_overrides.to_dict() if config.model_overrides else {}
    patch = int(overrides.get("patch_size", 4))
    factor = size / DIGITS_NATIVE_PX
    background_zero = all(m == 0 for m in config.data.mean)
    if patch <= factor and not background_zero:
        return (
            f"{config.model} ({family}) reads {name} at {size} px: the 8 px digits enlarged "
            f"{factor:g}x, so its {patch}-pixel patches are one grey level each and its "
            "patch embedding is rank one; train at --image-size=8 or set data.mean=0, "
            "data.std=255 (experiments/run.py patch_pitfall)."
        )
    return None


def count_params_and_macs(config, *, num_classes: int = 10) -> tuple[int, int]:
    """Parameters and multiply-accumulates per image (papers' convention) of the arm's model."""
    from cnn_flax.models import create_model
    from cnn_flax.models.counting import count_macs

    overrides = config.model_overrides.to_dict() if config.model_overrides else {}
    model = create_model(config.model, num_classes=num_classes, **overrides)
    size = int(config.data.image_size)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    params = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    return params, count_macs(lambda v, x: model.apply(v, x, train=False), variables, x)


def read_curves(workdir: pathlib.Path) -> list[dict]:
    rows = []
    with (workdir / "metrics.jsonl").open() as f:
        for line in f:
            rows.append(json.loads(line))
    return rows


def train_or_reuse(config, workdir: pathlib.Path) -> tuple[list[dict], float]:
    """Trains one arm for one seed in ``workdir``, or reuses the run finished there before.

    The trainer resumes from the workdir's latest checkpoint by itself, so an interrupted sweep
    rerun with the same ``--runs-dir`` continues where it stopped and adds only what is missing
    (more seeds, say). Returns the run's metrics log and its training wall time.
    """
    from cnn_flax.training import trainer

    record = workdir / "run.json"
    if record.exists():
        done = json.loads(record.read_text())
        if done["steps"] == config.total_steps:
            return read_curves(workdir), done["wall_s"]
    start = time.perf_counter()
    trainer.train(config, workdir, show_progress=False)
    wall = time.perf_counter() - start
    record.write_text(json.dumps({"steps": config.total_steps, "wall_s": round(wall, 1)}))
    return read_curves(workdir), round(wall, 1)


def default_out(study: Study, args: argparse.Namespace) -> pathlib.Path:
    """The study folder at small scale, its ``full/`` sub-folder at full scale."""
    folder = HERE / study.name
    return folder / "full" if getattr(args, "scale", "small") == "full" else folder


def run_study(study: Study, args: argparse.Namespace) -> pathlib.Path:
    out = pathlib.Path(args.out) if args.out else default_out(study, args)
    if not args.out and (out / "results.csv").exists() and not args.overwrite:
        raise SystemExit(
            f"error: {out} holds the study's committed results; pass --out=DIR to write a new "
            "run elsewhere, or --overwrite to replace them."
        )
    out.mkdir(parents=True, exist_ok=True)
    results, curves = [], []
    counts: dict[str, tuple[int, int]] = {}
    variants = [study.variants[i] for i in args.variants] if args.variants else study.variants
    budgets = arm_steps(study, variants, args)
    runs = [(v, s) for v in variants for s in args.seeds]
    bar = tqdm(runs, desc=study.name, unit="run", file=sys.stderr)
    sweep_rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix=f"exp_{study.name}_") as tmp:
        runs_dir = pathlib.Path(args.runs_dir) / study.name if args.runs_dir else pathlib.Path(tmp)
        rates = {
            v.label: pick_learning_rate(study, v, args, runs_dir, budgets[v.label], sweep_rows)
            for v in variants
        }
        for variant, seed in bar:
            bar.set_postfix_str(f"{variant.label} seed={seed}")
            steps = budgets[variant.label]
            lr = rates[variant.label]
            config = build_config(study, variant, seed=seed, args=args, steps=steps, lr=lr)
            suffix = "" if lr is None else f"_lr{lr:g}"
            workdir = runs_dir / f"{variant.label}_s{seed}{suffix}"
            log, wall = train_or_reuse(config, workdir)
            if variant.label not in counts:  # the same for every seed
                counts[variant.label] = count_params_and_macs(
                    config, num_classes=num_classes(study, args)
                )
            params, macs = counts[variant.label]
            train_rows = [r for r in log if r.get("split") == "train"]
            final_eval = [r for r in log if r.get("split") == "eval"][-1]
            if final_eval["step"] != steps:
                raise SystemExit(
                    f"error: {workdir} ended at step {final_eval['step']}, not {steps}; "
                    "delete it (or fix its config) and rerun"
                )
            for r in log:
                curves.append(
                    {
                        "variant": variant.label,
                        "group": variant.group,
                        "seed": seed,
                        "step": r["step"],
                        "split": r["split"],
                        "loss": r.get("loss"),
                        "accuracy": r.get("accuracy", r.get("top1")),
                    }
                )
            # Mean over the last fifth of the logged training losses: less noisy than one batch.
            tail = train_rows[-max(1, len(train_rows) // 5) :]
            results.append(
                {
                    "variant": variant.label,
                    "group": variant.group,
                    "seed": seed,
                    "steps": final_eval["step"],
                    "params": params,
                    "mmacs": round(macs / 1e6, 3),
                    "final_train_loss": round(statistics.fmean(r["loss"] for r in tail), 5),
                    "image_size": int(config.data.image_size),
                    "lr": float(config.optimizer.lr),
                    "eval_top1": round(float(final_eval["top1"]), 5),
                    "eval_loss": round(float(final_eval["loss"]), 5),
                    "wall_s": wall,
                }
            )
    write_csv(out / "results.csv", results)
    write_csv(out / "curves.csv", curves)
    if sweep_rows:
        write_csv(out / "lr_sweep.csv", sweep_rows)
    else:  # an earlier run's sweep would describe rates these results did not use
        (out / "lr_sweep.csv").unlink(missing_ok=True)
    write_summary_and_plot(study, results, curves, out=out, args=args)
    return out


def arm_steps(study: Study, variants, args: argparse.Namespace) -> dict[str, int]:
    """Training steps per arm: ``args.steps`` each, or with ``--equal-compute`` the first arm's
    ``args.steps`` times its MACs per image, divided by each arm's (equal training compute)."""
    if not args.equal_compute:
        return {v.label: args.steps for v in variants}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warned once more when the arm is built to train
        configs = {v.label: build_config(study, v, seed=0, args=args) for v in variants}
    macs = {
        label: count_params_and_macs(config, num_classes=num_classes(study, args))[1]
        for label, config in configs.items()
    }
    budget = args.steps * macs[variants[0].label]
    return {label: max(1, round(budget / m)) for label, m in macs.items()}


def pick_learning_rate(
    study: Study, variant: Variant, args, runs_dir: pathlib.Path, steps: int, rows: list[dict]
) -> float | None:
    """With ``--lr-sweep``, the rate of the sweep whose run (first seed) reaches the best top-1
    on the held-out part of the training split; ``None`` (the recipe's rate) without one.

    Rates written ``xM`` are multiples of the arm's own ``optimizer.lr``, so one sweep serves arms
    whose optimisers live on different scales (SGD and AdamW)."""
    if not args.lr_sweep:
        return None
    seed = args.seeds[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warned when the arm trains
        own = float(build_config(study, variant, seed=seed, args=args).optimizer.lr)
    scores: dict[float, float] = {}

    def score(entry: str, lr: float) -> None:
        config = build_config(
            study, variant, seed=seed, args=args, steps=steps, lr=lr, held_out=True
        )
        log, _ = train_or_reuse(config, runs_dir / f"sweep_{variant.label}_s{seed}_lr{lr:g}")
        top1 = float([r for r in log if r.get("split") == "eval"][-1]["top1"])
        scores[lr] = top1
        rows.append(
            {
                "variant": variant.label,
                "rate": entry,
                "lr": float(f"{lr:.6g}"),  # 0.00625, not 0.4 x 0.015625's 0.006250000000000001
                "heldout_top1": round(top1, 5),
            }
        )

    for entry in args.lr_sweep:
        score(entry, sweep_rate(entry, own))
    for _ in range(args.lr_sweep_extend):
        lr = beyond_the_edge(scores)
        if lr is None:
            break
        relative = str(args.lr_sweep[0]).startswith("x")
        score(f"x{lr / own:g}" if relative else f"{lr:g}", lr)
    return max(scores, key=scores.get)


def beyond_the_edge(scores: dict[float, float]) -> float | None:
    """The next rate to try when the best held-out score sits at the lowest or the highest rate
    tried (one step of the sweep's own spacing further out); ``None`` once the best is bracketed.

    A best rate at the edge of a sweep is an upper (or lower) bound, not an optimum: an arm
    compared there may be held back by the sweep rather than by the idea under study."""
    rates, edge = sorted(scores), edge_of(scores)
    if edge == "lowest":
        return rates[0] * rates[0] / rates[1]
    if edge == "highest":
        return rates[-1] * rates[-1] / rates[-2]
    return None


def edge_of(scores: dict[float, float]) -> str | None:
    """``"lowest"`` or ``"highest"`` when the best-scoring rate is that end of the rates tried
    (ties go to the rate tried first); ``None`` when it is bracketed or only one rate was tried."""
    rates = sorted(scores)
    best = max(scores, key=scores.get)
    if len(rates) < 2 or rates[0] < best < rates[-1]:
        return None
    return "lowest" if best == rates[0] else "highest"


def sweep_edges(sweep_rows: list[dict]) -> dict[str, str]:
    """Per arm whose picked rate (best held-out top-1) is the lowest or highest it tried, which
    edge: the summary says so, since a wider sweep might move that arm."""
    edges = {}
    for label in dict.fromkeys(r["variant"] for r in sweep_rows):
        tried = {
            float(r["lr"]): float(r["heldout_top1"]) for r in sweep_rows if r["variant"] == label
        }
        if edge := edge_of(tried):
            edges[label] = edge
    return edges


def sweep_rate(entry: str | float, own: float) -> float:
    """``entry`` of ``--lr-sweep`` as a learning rate: ``"x0.25"`` is 0.25 times ``own``."""
    text = str(entry)
    return own * float(text[1:]) if text.startswith("x") else float(text)


def parse_sweep(text: str) -> list[str]:
    """``--lr-sweep``: rates (``0.1,0.4``) or multiples of each arm's own rate (``x0.5,x2``)."""
    entries = [e.strip() for e in text.split(",") if e.strip()]
    try:
        [sweep_rate(e, 1.0) for e in entries]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give rates (0.1,0.4,1.6) or multiples of each arm's rate (x0.25,x1,x4)"
        ) from None
    return entries


def write_summary_and_plot(study, results, curves, *, out: pathlib.Path, args) -> None:
    from experiments.plots import plot_study

    sweep = out / "lr_sweep.csv"
    edges = sweep_edges(read_csv(sweep)) if sweep.exists() else {}
    table = summary_table(results, args, metrics=study.metrics, edges=edges)
    (out / "summary.md").write_text(table + "\n")
    plot_study(study, results, curves, out / "plot.png")


def recount(study: Study, args: argparse.Namespace) -> pathlib.Path:
    """Recomputes params and MACs of committed results (no training), then the summary and plot.

    For when the counting convention changes: the training numbers stay as they were measured.
    """
    out = pathlib.Path(args.out) if args.out else default_out(study, args)
    results = read_csv(out / "results.csv")
    curves = read_csv(out / "curves.csv")
    by_label = {v.label: v for v in study.variants}
    for row in results:
        config = build_config(study, by_label[row["variant"]], seed=int(row["seed"]), args=args)
        params, macs = count_params_and_macs(config, num_classes=num_classes(study, args))
        row["params"], row["mmacs"] = params, round(macs / 1e6, 3)
    write_csv(out / "results.csv", results)
    write_summary_and_plot(study, results, curves, out=out, args=args)
    return out


def read_csv(path: pathlib.Path) -> list[dict]:
    """Rows of a results/curves CSV with numbers parsed back."""

    def parse(value: str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return None if value == "" else value

    with path.open() as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def t_interval(values: list[float], *, level: float = 0.95) -> tuple[float, float, float]:
    """Mean, standard deviation and the half-width of the Student-t confidence interval of the
    mean over seeds (``nan`` widths with one seed: no spread measured)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    std = statistics.stdev(values)
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * std / len(values) ** 0.5
    return mean, std, half


def seeds_needed(effect: float, std: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Seeds per arm for a two-sided test at ``alpha`` to detect ``effect`` with ``power``, given
    the per-seed spread ``std`` (normal approximation: 2 (z_a/2 + z_b)^2 std^2 / effect^2)."""
    from scipy import stats

    if effect == 0:
        return float("inf")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return max(2.0, 2 * (z * std / effect) ** 2)


def welch_interval(a: list[float], b: list[float], *, level: float = 0.95) -> float:
    """Half-width of the Welch t-interval of ``mean(a) - mean(b)`` (unequal spreads; ``nan``
    with fewer than two seeds on a side, ``0`` when neither spread is measurable)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(stats.t.ppf(0.5 + level / 2, dof) * (va + vb) ** 0.5)


def interval_lines(results: list[dict], metric: str = "eval_top1") -> list[str]:
    """Per arm the metric's mean, std and 95% t-interval over seeds; per arm after the first of
    its group, the effect against that first arm with its 95% Welch interval, and the seeds per
    arm its spread needs."""
    lines = [
        "",
        f"`{metric}` over seeds: mean, standard deviation, 95% Student-t interval of the mean; "
        "effect against the first arm of the group with its 95% Welch t-interval, and the seeds "
        "per arm that the measured spread needs to resolve it (two-sided 5%, power 80%).",
        "",
        "| variant | seeds | mean | std | 95% CI | effect | effect 95% CI | seeds needed |",
        "|---|---:|---:|---:|---|---:|---|---:|",
    ]
    baselines: dict[str, tuple[float, float, list[float]]] = {}
    for label in dict.fromkeys(r["variant"] for r in results):
        rows = [r for r in results if r["variant"] == label]
        values = [float(r[metric]) for r in rows]
        mean, std, half = t_interval(values)
        group = rows[0].get("group", "")
        if half != half:
            ci = "n/a (1 seed)"
        elif half == 0:  # every seed scored the same: the spread is unmeasured, not zero
            ci = f"no spread in {len(rows)} seeds"
        else:
            ci = f"[{mean - half:.4f}, {mean + half:.4f}]"
        effect = effect_ci = needed = ""
        if group in baselines:
            base_mean, base_std, base_values = baselines[group]
            delta = mean - base_mean
            pooled = ((std**2 + base_std**2) / 2) ** 0.5 if std == std else float("nan")
            effect = f"{delta:+.4f}"
            width = welch_interval(values, base_values)
            if width != width:
                effect_ci = ""
            elif width == 0:  # neither arm's seeds differ: no interval can be formed
                effect_ci = "no spread measured"
            else:
                effect_ci = f"[{delta - width:+.4f}, {delta + width:+.4f}]"
            n = seeds_needed(delta, pooled) if pooled == pooled and pooled > 0 else float("nan")
            needed = "n/a" if n != n else ("inf" if n == float("inf") else f"{n:.0f}")
        else:
            baselines[group] = (mean, std, values)
        lines.append(
            f"| {label} | {len(rows)} | {mean:.4f} | {std:.4f} | {ci} | {effect} | "
            f"{effect_ci} | {needed} |".replace("nan", "n/a")
        )
    return lines


def summary_table(
    results: list[dict],
    args: argparse.Namespace,
    *,
    metrics: tuple[str, ...] = ("eval_top1",),
    edges: dict[str, str] | None = None,
) -> str:
    """The summary: per arm the counts and mean ± std, the steps and rate each arm ran at (and
    whether that rate is at an ``edges`` of its sweep), then the intervals per metric."""
    edges = edges or {}
    seeds = ",".join(str(s) for s in args.seeds)
    reestimated = getattr(args, "bn_reestimate_batches", 0)
    bn = (
        f" BatchNorm statistics re-estimated on {reestimated} training batches before each "
        "evaluation (models with BatchNorm that update it)."
        if reestimated
        else " Evaluated with the running BatchNorm statistics as trained."
    )
    lines = [
        f"Data set `{args.dataset}`, {args.steps} steps of batch {args.batch_size}, seeds "
        f"{seeds}; mean ± standard deviation over seeds.{bn}",
        "",
        "| variant | image px | params | MMACs/image | final train loss | eval top-1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in dict.fromkeys(r["variant"] for r in results):
        rows = [r for r in results if r["variant"] == label]
        lines.append(
            f"| {label} | {rows[0]['image_size']} | {rows[0]['params']:,} | "
            f"{rows[0]['mmacs']:.1f} | "
            f"{mean_spread([r['final_train_loss'] for r in rows])} | "
            f"{mean_spread([r['eval_top1'] for r in rows])} |"
        )
    arms = {r["variant"]: (r["steps"], r.get("lr")) for r in results}
    if any(steps != args.steps for steps, _ in arms.values()) or getattr(args, "lr_sweep", None):
        lines += ["", "Per arm (equal compute and/or the learning rate the sweep picked):", ""]
        lines += [
            f"- {label}: {steps} steps, lr {lr if lr is None else f'{lr:.6g}'}"
            + (
                f" (the {edges[label]} rate its sweep tried: a wider sweep might do better)"
                if label in edges
                else ""
            )
            for label, (steps, lr) in arms.items()
        ]
    for metric in metrics:
        lines += interval_lines(results, metric)
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", help=f"one of {', '.join(STUDIES)}")
    parser.add_argument(
        "--scale",
        choices=SCALES,
        default="small",
        help="small: the CPU design on digits (default); full: the study's full-scale preset "
        "(real data set at native resolution, the paper's epochs and seeds), written to "
        "STUDY/full/",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="build and validate every arm's config at the chosen scale, print the runs and the "
        "accelerator-hours estimate, train nothing",
    )
    parser.add_argument(
        "--dataset", default=None, help="data set name (cnn_flax.data); default: the scale's"
    )
    parser.add_argument("--image-size", type=int, default=None, help="default: the study's")
    parser.add_argument("--steps", type=int, default=None, help="default: the scale's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the scale's (32)")
    parser.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help="learning-rate warm-up in epochs (default: the recipe's, 1 epoch); short runs need "
        "less, or the warm-up takes most of the run",
    )
    parser.add_argument(
        "--seeds",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="default: the scale's (0,1 at small scale)",
    )
    parser.add_argument(
        "--lr-sweep",
        type=parse_sweep,
        default=None,
        help="optimizer.lr values to try per arm, e.g. 0.1,0.4,1.6, or multiples of each arm's "
        "own rate, e.g. x0.25,x1,x4: each arm's best on a "
        f"held-out {HELD_OUT_PERCENT}%% of the training split (first seed) is then used for "
        "every seed; the sweep is written to lr_sweep.csv",
    )
    parser.add_argument(
        "--lr-sweep-extend",
        type=int,
        default=2,
        help="when an arm's best rate is the lowest or highest of --lr-sweep, try up to this many "
        "further rates beyond it, one step of the sweep's spacing each, until the best is "
        "bracketed (default 2; 0: the sweep as given)",
    )
    parser.add_argument(
        "--equal-compute",
        action="store_true",
        help="scale each arm's steps so that steps x MACs per image equal the first arm's "
        "(--steps is the first arm's)",
    )
    parser.add_argument(
        "--bn-reestimate-batches",
        type=int,
        default=DEFAULT_BN_BATCHES,
        help="re-estimate BatchNorm statistics on this many training batches (train mode, equally "
        "weighted average) before each evaluation; 0 evaluates with the running statistics as "
        f"trained (default {DEFAULT_BN_BATCHES})",
    )
    parser.add_argument(
        "--variants",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="indices of the arms to run, e.g. 0,1 (default: all)",
    )
    parser.add_argument(
        "--cache-dir",
        default=pathlib.Path(tempfile.gettempdir()) / "cnn_flax_experiments_xla_cache",
        help="persistent XLA compilation cache shared by the runs",
    )
    parser.add_argument(
        "--runs-dir",
        default=None,
        help="keep each run's workdir under DIR/STUDY; rerunning with the same DIR resumes an "
        "interrupted sweep and reuses finished runs (default: a temporary folder)",
    )
    parser.add_argument(
        "--recount",
        action="store_true",
        help="recompute params/MACs, summary and plot of existing results without training",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: the study folder, whose committed results are kept unless "
        "--overwrite)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="let a run without --out replace the study folder's committed results",
    )
    args = parser.parse_args(argv)
    if args.lr_sweep_extend < 0:
        parser.error("--lr-sweep-extend must be >= 0 (0: the sweep as given)")
    if args.bn_reestimate_batches < 0:
        parser.error("--bn-reestimate-batches must be >= 0 (0: off)")
    return resolve_scale(load_study(args.study), args)


SCALES = ("small", "full")
DEFAULT_BN_BATCHES = 20


def resolve_scale(study: Study, args: argparse.Namespace) -> argparse.Namespace:
    """Fills every flag not given with the scale's value: the CPU design's defaults, or the
    study's :class:`FullScale` preset."""
    if args.scale == "full":
        full = study.full
        if full is None:
            raise SystemExit(
                f"error: study {study.name!r} declares no full-scale preset yet (STUDY.full in "
                f"experiments/{study.name}/config.py); pass --dataset, --image-size, --steps, "
                "--batch-size and --seeds by hand instead."
            )
        defaults = {
            "dataset": full.dataset,
            "steps": full.steps,
            "batch_size": full.batch_size,
            "seeds": list(full.seeds),
            "lr_sweep": list(full.lr_sweep) if full.lr_sweep else None,
            "warmup_epochs": full.warmup_epochs,
            "variants": list(full.variants) if full.variants else None,
        }
    else:
        defaults = {
            "dataset": "digits",
            "steps": study.default_steps,
            "batch_size": 32,
            "seeds": [0, 1],
        }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def num_classes(study: Study, args: argparse.Namespace) -> int:
    full = study.full if getattr(args, "scale", "small") == "full" else None
    return full.num_classes if full is not None else 10


# Training FLOPs per multiply-accumulate of the forward pass: 2 FLOPs per MAC, times 3 for the
# forward pass and the two products of the backward pass (gradients of inputs and of weights).
TRAIN_FLOPS_PER_MAC = 6
# The sustained training rate assumed for the estimate, not measured here: 10 TFLOP/s, about 1% of
# an H100's dense bf16 peak (989 TFLOP/s); networks of CIFAR size at batch 128 are bound by
# kernel launches and memory, not by the tensor cores.
ASSUMED_TRAIN_FLOPS = 10e12


def plan(study: Study, args: argparse.Namespace) -> list[dict]:
    """Every run of the study at the chosen scale, its config built and validated (no training):
    per arm the steps, images, MACs per image, the runs (seeds, plus the lr sweep's) and the
    accelerator-hours estimate ``MACs x 6 x images x runs / ASSUMED_TRAIN_FLOPS``."""
    from cnn_flax.training.config_checks import check_config

    variants = [study.variants[i] for i in args.variants] if args.variants else study.variants
    budgets = arm_steps(study, variants, args)
    rows = []
    for variant in variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the patch pitfall warns at run time, not here
            config = build_config(study, variant, seed=args.seeds[0], args=args)
        config.total_steps = budgets[variant.label]
        check_config(config)
        params, macs = count_params_and_macs(config, num_classes=num_classes(study, args))
        images = budgets[variant.label] * args.batch_size
        sweep = len(args.lr_sweep or ())
        runs = len(args.seeds) + sweep
        flops = macs * TRAIN_FLOPS_PER_MAC * images * runs
        rows.append(
            {
                "variant": variant.label,
                "model": config.model,
                "data": f"{config.data.name} {config.data.image_size}px",
                "steps": budgets[variant.label],
                "batch": args.batch_size,
                "params": params,
                "mmacs": round(macs / 1e6, 1),
                "runs": runs,
                "hours": flops / ASSUMED_TRAIN_FLOPS / 3600,
            }
        )
    return rows


def print_plan(study: Study, args: argparse.Namespace, rows: list[dict]) -> None:
    print(f"{study.name} at {args.scale} scale: seeds {args.seeds}, lr sweep {args.lr_sweep}")
    for r in rows:
        print(
            f"  {r['variant']}: {r['model']} on {r['data']}, {r['steps']} steps of batch "
            f"{r['batch']}, {r['params']:,} params, {r['mmacs']} MMACs/image, {r['runs']} runs, "
            f"~{r['hours']:.2f} accelerator-hours"
        )
    total = sum(r["hours"] for r in rows)
    print(
        f"total ~{total:.1f} accelerator-hours (MACs x {TRAIN_FLOPS_PER_MAC} x images x runs at "
        f"an assumed {ASSUMED_TRAIN_FLOPS / 1e12:g} TFLOP/s sustained)"
    )
    if args.lr_sweep and args.lr_sweep_extend:
        print(
            f"plus up to {args.lr_sweep_extend} sweep runs per arm whose best rate sits at the "
            "edge of the sweep (--lr-sweep-extend)"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    study = load_study(args.study)
    if args.plan:
        print_plan(study, args, plan(study, args))
        return
    out = recount(study, args) if args.recount else run_study(study, args)
    print(f"wrote {out}/results.csv, curves.csv, summary.md, plot.png")


if __name__ == "__main__":
    main()
