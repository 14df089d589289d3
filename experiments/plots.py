"""Plots of study results: training curves, or accuracy bars annotated with cost."""

from __future__ import annotations

import collections
import pathlib
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.study import Study  # noqa: E402


def plot_study(study: Study, results: list[dict], curves: list[dict], path: pathlib.Path) -> None:
    if study.plot == "curves":
        _curves(study, curves, path)
    else:
        _bars(study, results, path)


def _curves(study: Study, curves: list[dict], path: pathlib.Path) -> None:
    groups = list(dict.fromkeys(r["group"] for r in curves))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        rows = [r for r in curves if r["group"] == group and r["split"] == "train"]
        for label in dict.fromkeys(r["variant"] for r in rows):
            by_step = collections.defaultdict(list)
            for r in rows:
                if r["variant"] == label and r["loss"] is not None:
                    by_step[r["step"]].append(r["loss"])
            steps = sorted(by_step)
            mean = [statistics.fmean(by_step[s]) for s in steps]
            lo = [min(by_step[s]) for s in steps]
            hi = [max(by_step[s]) for s in steps]
            style = "--" if label.startswith("plain") else "-"
            (line,) = ax.plot(steps, mean, style, label=label)
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (mean over seeds; band: min-max)")
        ax.set_title(group or study.name)
        ax.legend()
    fig.suptitle(study.question, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bars(study: Study, results: list[dict], path: pathlib.Path) -> None:
    labels = list(dict.fromkeys(r["variant"] for r in results))
    means, errs, notes = [], [], []
    for label in labels:
        rows = [r for r in results if r["variant"] == label]
        accs = [r["eval_top1"] for r in rows]
        means.append(statistics.fmean(accs))
        errs.append(statistics.stdev(accs) if len(accs) > 1 else 0.0)
        notes.append(f"{rows[0]['params'] / 1e6:.2f}M params\n{rows[0]['mmacs']:.1f} MMACs")
    fig, ax = plt.subplots(figsize=(max(6, 1.9 * len(labels)), 4.8))
    bars = ax.bar(labels, means, yerr=errs, capsize=4, color="tab:blue", alpha=0.8)
    for bar, note in zip(bars, notes):
        ax.annotate(
            note,
            (bar.get_x() + bar.get_width() / 2, 0.02),
            xycoords=("data", "axes fraction"),
            ha="center",
            fontsize=7,
            color="white",
        )
    low = min(m - e for m, e in zip(means, errs))
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_ylabel("eval top-1 (mean ± std over seeds)")
    ax.set_title(study.question, fontsize=10)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
