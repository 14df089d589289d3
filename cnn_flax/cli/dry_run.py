"""``python -m cnn_flax.train --config=NAME --dry_run``: what a recipe will do, before doing it.

Prints the resolved config, the run's arithmetic (steps, epochs, images seen), the per-epoch
schedule of the learning rate, the weight EMA and the augmentation, writes that schedule as CSV
and plots it (PNG). Nothing is compiled and no example is read: the data set's sizes come from
its metadata (:func:`cnn_flax.data.datasets.sizes_without_reading`) and every number from the
same :class:`cnn_flax.training.run_plan.RunPlan` and learning-rate schedule the trainer uses.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
import tempfile
from collections.abc import Callable, Iterator

import ml_collections
import numpy as np

from cnn_flax.training.run_plan import RunPlan, make_run_plan

Printer = Callable[[str], None]
MAX_ROWS = 40  # printed epoch rows; the CSV holds every epoch


@dataclasses.dataclass(frozen=True)
class EpochRow:
    """One data epoch of the run, in updates ``[first, last)``.

    Attributes:
      epoch: 0-based data epoch.
      first: its first update.
      last: one past its last update (the last epoch may be cut short by ``total_steps``).
      lr_first: learning rate of its first update.
      lr_last: learning rate of its last update.
      ema_copies: EMA updates that copy the weights (torchvision's reset in the warm-up).
      ema_averages: EMA updates that average.
      ema_decay: decay of its first averaging update (``nan`` without one).
    """

    epoch: int
    first: int
    last: int
    lr_first: float
    lr_last: float
    ema_copies: int
    ema_averages: int
    ema_decay: float


def _learning_rates(config: ml_collections.ConfigDict, plan: RunPlan, steps: np.ndarray):
    """The trainer's schedule at ``steps``, evaluated once on the host CPU."""
    import jax

    from cnn_flax.training import optim

    schedule = optim.create_learning_rate_schedule(config, plan)
    with jax.default_device(jax.devices("cpu")[0]):
        return np.asarray(schedule(np.asarray(steps, np.float32)), np.float64)


def _ema_decays(plan: RunPlan, updates: np.ndarray) -> np.ndarray:
    """Per update: 1.0 for a copy, the decay for an average, nan where the EMA does not move."""
    ema = plan.ema
    out = np.full(updates.shape, np.nan)
    if ema is None:
        return out
    due = (updates % ema.steps_per_epoch) % ema.every == 0
    decay = np.full(updates.shape, ema.decay)
    if ema.tf_warmup:  # cnn_flax.training.optim.ema_decay_at, in numpy
        decay = np.minimum(decay, (1.0 + updates) / (10.0 + updates))
    decay = np.where(updates <= ema.copy_through, 0.0, decay)  # a copy: nothing of the past
    return np.where(due, decay, out)


def epoch_rows(config: ml_collections.ConfigDict, plan: RunPlan) -> list[EpochRow]:
    """The schedule of every data epoch of the run."""
    spe = plan.steps_per_epoch
    starts = np.arange(0, plan.total_steps, spe)
    ends = np.minimum(starts + spe, plan.total_steps)
    lr_first = _learning_rates(config, plan, starts)
    lr_last = _learning_rates(config, plan, ends - 1)
    rows = []
    for epoch, (first, last) in enumerate(zip(starts, ends, strict=True)):
        decays = _ema_decays(plan, np.arange(first, last))
        moves = decays[~np.isnan(decays)]
        averages = moves[moves > 0]
        rows.append(
            EpochRow(
                epoch=epoch,
                first=int(first),
                last=int(last),
                lr_first=float(lr_first[epoch]),
                lr_last=float(lr_last[epoch]),
                ema_copies=int(np.sum(moves == 0)),
                ema_averages=int(averages.size),
                ema_decay=float(averages[0]) if averages.size else math.nan,
            )
        )
    return rows


def _flat_config(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[str]:
    for key in sorted(config.keys()):
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            yield from _flat_config(value, f"{prefix}{key}.")
        else:
            yield f"  {prefix}{key} = {value!r}"


def _augmentation(config: ml_collections.ConfigDict) -> str:
    """The train-time augmentation, which is the same in every epoch."""
    from cnn_flax.data.mixing import SWITCH_PROBABILITY
    from cnn_flax.data.sizes import train_size

    aug = config.data.augment
    parts = [f"{train_size(config.data)} px " + ("random-resized" if aug.inception_crop else "")]
    if aug.pad_crop:
        parts.append("pad-4 crop")
    if aug.flip:
        parts.append("flip")
    if aug.trivial_augment_wide:
        parts.append("TrivialAugmentWide")
    if aug.randaugment.num_layers:
        parts.append(f"RandAugment({aug.randaugment.num_layers}, {aug.randaugment.magnitude})")
    if aug.autoaugment:
        parts.append(f"AutoAugment {aug.autoaugment}")
    if aug.random_erasing:
        parts.append(f"random erasing p={aug.random_erasing}")
    if aug.mixup_alpha and aug.cutmix_alpha:
        parts.append(
            f"mixup {aug.mixup_alpha} or cutmix {aug.cutmix_alpha} (cutmix with p="
            f"{SWITCH_PROBABILITY} per batch)"
        )
    elif aug.mixup_alpha:
        parts.append(f"mixup {aug.mixup_alpha}")
    elif aug.cutmix_alpha:
        parts.append(f"cutmix {aug.cutmix_alpha}")
    if config.label_smoothing:
        parts.append(f"label smoothing {config.label_smoothing}")
    if config.data.repeated_augmentation > 1:
        parts.append(f"repeated augmentation x{config.data.repeated_augmentation}")
    return ", ".join(p.strip() for p in parts)


def summary(config: ml_collections.ConfigDict, plan: RunPlan, *, num_train: int) -> list[str]:
    """The run's arithmetic, one fact a line."""
    from cnn_flax.data.sizes import eval_sizes
    from cnn_flax.training import optim

    epochs = plan.total_steps / plan.steps_per_epoch
    images = plan.total_steps * plan.global_batch
    reps = int(config.data.repeated_augmentation)
    peak = optim.peak_learning_rate(config, plan)
    sizes = eval_sizes(config.data)
    lines = [
        f"batch {plan.global_batch} (micro-batch {plan.micro_batch} x {plan.grad_accum_steps} "
        f"accumulated), {plan.steps_per_epoch} updates per epoch of {num_train:,} images",
        f"{plan.total_steps:,} updates = {epochs:g} epochs; {images:,} images seen "
        f"({num_train // reps:,} distinct images per epoch, each x{reps})",
        f"learning rate: peak {peak:g} ({config.schedule.name}), warm-up {plan.warmup_steps:,} "
        f"updates from {peak * config.schedule.warmup_init_factor:g}, end "
        f"{peak * config.schedule.end_lr_factor:g}",
        f"augmentation (same every epoch): {_augmentation(config)}",
        f"evaluation: {sizes.crop} px centre crop of a {sizes.resize} px resize, every "
        f"{plan.eval_every:,} updates",
    ]
    ema = plan.ema
    if ema is None:
        lines.append("EMA: none")
    else:
        horizon = 1.0 / (1.0 - ema.decay) if ema.decay < 1 else math.inf
        per_epoch = math.ceil(plan.steps_per_epoch / ema.every)
        copies = f", copies the weights through update {ema.copy_through:,}"
        lines.append(
            f"EMA: decay {ema.decay:.6f} per EMA update (config {config.ema_decay}"
            f"{', torchvision-adjusted' if config.ema_adjust else ''}), after the updates i of "
            f"each epoch with i % {ema.every} == 0 ({per_epoch} per epoch)"
            f"{copies if ema.copy_through >= 0 else ''}; horizon 1/(1-decay) = {horizon:,.0f} "
            f"EMA updates = {horizon / per_epoch:.2f} epochs"
            f"{'; BatchNorm statistics averaged too' if ema.batch_stats else ''}"
        )
    return lines


def _shown(rows: list[EpochRow], plan: RunPlan) -> list[EpochRow]:
    """All rows when few; else the warm-up, every k-th epoch and the last one."""
    if len(rows) <= MAX_ROWS:
        return rows
    warm = math.ceil(plan.warmup_steps / plan.steps_per_epoch) + 1
    every = math.ceil(len(rows) / (MAX_ROWS - warm - 1))
    keep = {r.epoch for r in rows[:warm]} | {r.epoch for r in rows[::every]} | {rows[-1].epoch}
    return [r for r in rows if r.epoch in keep]


def _row_text(row: EpochRow) -> str:
    ema = []
    if row.ema_copies:
        ema.append(f"copy x{row.ema_copies}")
    if row.ema_averages:
        ema.append(f"avg x{row.ema_averages} @{row.ema_decay:.6f}")
    return (
        f"{row.epoch:>6} {row.first:>10,} {row.lr_first:>12.6g} {row.lr_last:>12.6g}  "
        f"{' + '.join(ema) or '-'}"
    )


def write_csv(rows: list[EpochRow], path: pathlib.Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([field.name for field in dataclasses.fields(EpochRow)])
        for row in rows:
            writer.writerow(dataclasses.astuple(row))


def plot(config: ml_collections.ConfigDict, plan: RunPlan, path: pathlib.Path) -> None:
    """Learning rate and EMA weight of the new weights (1 - decay) against the epoch."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global state

    updates = np.unique(np.linspace(0, plan.total_steps - 1, 4000).astype(np.int64))
    epochs = updates / plan.steps_per_epoch
    figure = Figure(figsize=(9, 6), layout="constrained")
    lr_axes, ema_axes = figure.subplots(2, 1, sharex=True)
    lr_axes.plot(epochs, _learning_rates(config, plan, updates))
    lr_axes.set_ylabel("learning rate")
    name = (config.recipe or config.model).split(":")[0]
    lr_axes.set_title(f"{name}: learning rate and weight EMA per epoch (dotted: warm-up end)")
    if plan.ema is not None:
        # Every EMA update of a sparse sample would be missed: take each sampled epoch's first.
        due = _first_ema_updates(plan, updates)
        weight = 1.0 - _ema_decays(plan, due)
        ema_axes.step(due / plan.steps_per_epoch, weight, where="post")
        ema_axes.set_yscale("log")
    ema_axes.set_ylabel("EMA: weight of new weights")
    ema_axes.set_xlabel("epoch")
    for axes in (lr_axes, ema_axes):
        if plan.warmup_steps:
            axes.axvline(plan.warmup_steps / plan.steps_per_epoch, color="grey", ls=":")
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)


def _first_ema_updates(plan: RunPlan, updates: np.ndarray) -> np.ndarray:
    """For each update, the first one at or after it where the EMA moves."""
    ema = plan.ema
    epoch, index = np.divmod(updates, ema.steps_per_epoch)
    index = -(-index // ema.every) * ema.every
    wrapped = index >= ema.steps_per_epoch
    due = np.where(wrapped, (epoch + 1) * ema.steps_per_epoch, epoch * ema.steps_per_epoch + index)
    return np.unique(due[due < plan.total_steps])


def dry_run(
    config: ml_collections.ConfigDict,
    *,
    workdir: str | None,
    num_train: int | None = None,
    echo: Printer = print,
) -> pathlib.Path:
    """Prints what training ``config`` would do and writes its schedule; returns the PNG's path.

    Args:
      config: a checked config.
      workdir: where to write ``dry_run_schedule.png`` / ``.csv`` (created if missing); ``None``:
        a new temporary folder.
      num_train: training examples, instead of the data set's metadata.
      echo: where the lines go.
    """
    from cnn_flax.data.datasets import sizes_without_reading

    if num_train is None:
        info, where = sizes_without_reading(config.data)
        num_train = info.num_train
        sizes = f"{info.num_train:,} train / {info.num_eval:,} eval images ({where})"
    else:
        sizes = f"{num_train:,} train images (--num_train)"
    plan = make_run_plan(config, num_train=num_train)
    rows = epoch_rows(config, plan)
    out = pathlib.Path(workdir) if workdir else pathlib.Path(tempfile.mkdtemp(prefix="dry_run_"))
    out.mkdir(parents=True, exist_ok=True)
    png, table = out / "dry_run_schedule.png", out / "dry_run_schedule.csv"
    write_csv(rows, table)
    plot(config, plan, png)

    echo(f"Dry run of {config.recipe or config.model} (nothing compiled, no data read)")
    echo("Resolved config:")
    for line in _flat_config(config):
        echo(line)
    echo(f"Data: {config.data.name}, {sizes}")
    for line in summary(config, plan, num_train=num_train):
        echo(line)
    shown = _shown(rows, plan)
    note = "" if len(shown) == len(rows) else f" ({len(shown)} of {len(rows)} epochs shown)"
    echo(f"Per-epoch schedule{note}: learning rate at the epoch's first and last update; EMA")
    echo(f"{'epoch':>6} {'update':>10} {'lr first':>12} {'lr last':>12}  ema")
    for row in shown:
        echo(_row_text(row))
    echo(f"Schedule of every epoch: {table}")
    echo(f"Plot: {png}")
    return png


__all__ = ["EpochRow", "dry_run", "epoch_rows", "summary"]
