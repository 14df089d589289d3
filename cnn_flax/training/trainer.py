"""The training loop: init or resume, jitted steps, evaluation, checkpoints, logging.

A workdir holds ``config.json`` (the resolved config), ``model.json`` (what ``evaluate`` and
``predict`` need to rebuild the model), ``held_out.json`` (a folder set's own held-out images,
when it has no eval sub-folder), ``metrics.jsonl``, ``tensorboard/`` and ``checkpoints/``,
the lock of the run training there (``.lock``, :mod:`cnn_flax.workdir_lock`) and, after an
allowed config change, ``config_history.jsonl`` (:mod:`cnn_flax.run_record`).

Resume is exact. Everything random is a function of ``(seed, step)``: the input pipeline starts at
the restored step and yields the batches an uninterrupted run would, and dropout/mixup keys are
``fold_in(key(seed), step)``. The state is restored bit for bit. So stopping (SIGTERM, SIGINT, a
crash after a checkpoint) and resuming ends with the parameters of an uninterrupted run.

The loop (:func:`_loop`) reads top to bottom; its pieces each keep their own state:
:class:`cnn_flax.intervals.MetricIntervals` (metrics fetched one interval late, non-finite steps
caught, at most :data:`STEPS_AHEAD` steps queued on the device and each timed when its result is
ready, so images/s, MFU and the bar count computed steps and a stop signal acts within a step or
two), :class:`cnn_flax.intervals.Stopwatch` (evaluation and saves left out of images/s),
:class:`cnn_flax.run_plan.RunPlan` (the log / eval / checkpoint cadences), and here
:class:`_TrainStep` (compiled once), :class:`_Checkpoints`, :class:`_Profile` and
:class:`_StopSignal`. The model is built by :mod:`cnn_flax.model_builder` and evaluated by
:mod:`cnn_flax.eval_loop`, which ``evaluate`` uses too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import math
import pathlib
import signal
import threading
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cnn_flax.training import (
    checkpoint,
    finetune,
    intervals,
    metrics,
    parallel,
    run_record,
    steps,
    workdir_lock,
)
from cnn_flax.training.config_checks import check_config
from cnn_flax.training.eval_loop import Evaluator
from cnn_flax.training.model_builder import build_model, freezes_batch_norm
from cnn_flax.training.run_plan import RunPlan, make_run_plan
from cnn_flax.training.state import TrainState, create_train_state

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became non-finite)."""


class StopReason(enum.Enum):
    """Why the loop ended. Only ``FINISHED`` means the run is complete; the others saved a
    checkpoint to resume from."""

    FINISHED = "finished"
    SIGNAL = "a stop signal"  # SIGTERM/SIGINT (on any process)
    STOP_AFTER = "stop_after"  # train(stop_after=N): tests and time-limited jobs

    @property
    def interrupted(self) -> bool:
        return self is not StopReason.FINISHED


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
      state: the final state (replicated global arrays).
      step: optimizer updates taken in total (``state.step`` counts micro-steps, which
        differ when ``grad_accum_steps > 1``).
      stopped: why the loop ended (:class:`StopReason`; all but ``FINISHED`` are resumable).
      eval_metrics: the last evaluation (``{}`` if none ran).
      signal: the signal that stopped the run (``signal.SIGTERM``, ``SIGINT``), if one did.
    """

    state: TrainState
    step: int
    stopped: StopReason
    eval_metrics: dict[str, float]
    signal: int | None = None


@dataclasses.dataclass(frozen=True)
class _Run:
    """Everything the loop uses that :func:`train` builds once."""

    config: ml_collections.ConfigDict
    plan: RunPlan
    model: nn.Module
    tx: optax.GradientTransformation
    lr_fn: optax.Schedule
    mesh: jax.sharding.Mesh
    num_classes: int
    data: Any
    workdir: pathlib.Path
    manager: checkpoint.CheckpointManager
    writer: metrics.MetricWriter
    is_main: bool
    change: run_record.ConfigChange | None = (
        None  # an allowed change, recorded once training goes on
    )


# --- train ----------------------------------------------------------------------------------------


def train(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    profile: bool = False,
    stop_after: int | None = None,
    devices: list[jax.Device] | None = None,
    show_progress: bool = True,
    data_source: Any = None,
    allow_config_change: bool = False,
) -> TrainResult:
    """Trains (or resumes training) ``config`` in ``workdir``.

    Args:
      config: the resolved training config.
      workdir: output folder; an existing one with checkpoints is resumed from its latest.
      profile: capture a ``jax.profiler`` trace of a few steps into ``workdir/profile``.
      stop_after: stop (with a checkpoint, as on SIGTERM) once this many optimizer updates are
        done in total; for tests and time-limited jobs.
      devices: devices of the mesh (default: all devices of all processes).
      show_progress: draw the tqdm progress bar (process 0).
      data_source: an object with the data API's ``get_dataset_info``, ``create_train_iterator``
        and ``create_eval_iterator`` (default: :mod:`cnn_flax.data`); tests pass small stand-ins.
      allow_config_change: resume a workdir whose config differs from ``config`` (the change is
        recorded by :mod:`cnn_flax.run_record`); refused otherwise.

    Returns:
      A :class:`TrainResult`.

    Raises:
      ValueError: bad config values, unknown data set or model (before any compile).
      checkpoint.CheckpointError: no checkpoint of the workdir can be restored (nothing written).
      workdir_lock.WorkdirError: the workdir is a file, not writable, or in use by another run.
      run_record.ConfigChangeError: the workdir trained with another config (nothing written).
      TrainingError: the loss, gradient or state became non-finite (the last good checkpoint
        is kept, nothing after it is saved).
    """
    if data_source is None:
        from cnn_flax import data as data_source
    check_config(config)
    workdir = pathlib.Path(workdir).resolve()
    workdir_lock.prepare_workdir(workdir)
    mesh = parallel.create_mesh(devices)
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
    is_main = jax.process_index() == 0
    with contextlib.ExitStack() as cleanup:  # closed in reverse: writer, checkpoints, lock
        # Before the data set is read (minutes for a large folder): a second run is refused at once.
        cleanup.callback(workdir_lock.acquire(workdir, enabled=is_main).release)
        run = _set_up(
            config,
            workdir,
            mesh=mesh,
            data_source=data_source,
            is_main=is_main,
            allow_config_change=allow_config_change,
        )
        cleanup.callback(run.manager.close)
        cleanup.callback(run.writer.close)
        start_step, state = _starting_state(run)
        if start_step >= run.plan.micro(run.plan.total_steps):
            _say(is_main, _finished_message(workdir, run.plan, start_step, allow_config_change))
            return TrainResult(state, run.plan.updates(start_step), StopReason.FINISHED, {})
        return _loop(
            run,
            state,
            start_step=start_step,
            stop_after=stop_after,
            profile=profile,
            show_progress=show_progress and is_main,
        )


def _set_up(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    *,
    mesh: jax.sharding.Mesh,
    data_source: Any,
    is_main: bool,
    allow_config_change: bool,
) -> _Run:
    """Reads the data set's size, checks a config change, plans the run (from the point where
    its batch size took effect), builds the model and the optimizer."""
    from cnn_flax.training import optim

    # Refused before anything is read or created; recorded only once the run goes on.
    latest_dir = checkpoint.training_step_dir(workdir / checkpoint.CHECKPOINTS_DIR)
    latest = (int(latest_dir.name) if latest_dir else 0) // int(config.grad_accum_steps)
    change = run_record.check(workdir, config, step=latest, allow_change=allow_config_change)

    # Each start-up phase that takes seconds says so first (imports and data set preparation,
    # the model's initialisation, the compile), so a run is never silent for long.
    _say(is_main, f"Reading data set {config.data.name} ...")
    # Data errors (unknown name, ImageNet not prepared) surface here, before any compile.
    num_classes, num_train, _ = data_source.get_dataset_info(config.data)
    origin = run_record.batch_origin(workdir, change)
    plan = make_run_plan(config, num_train=num_train, origin=origin)
    model = build_model(config, num_classes=num_classes, num_devices=mesh.size)
    _check_start(
        config,
        plan,
        num_train=num_train,
        fresh=not latest,
        is_main=is_main,
        bn_momentum=getattr(model, "bn_momentum", None),
    )
    # Each jitted step sees one micro-batch; the optimizer updates every grad_accum_steps.
    parallel.check_batch_size(plan.micro_batch, mesh)
    tx = optim.create_optimizer(config, plan)
    return _Run(
        config=config,
        plan=plan,
        model=model,
        tx=tx,
        lr_fn=optim.create_learning_rate_schedule(config, plan),
        mesh=mesh,
        num_classes=num_classes,
        data=data_source,
        workdir=workdir,
        manager=checkpoint.CheckpointManager(
            workdir, keep=int(config.keep_checkpoints), keep_best=plan.keep_best
        ),
        writer=metrics.MetricWriter(workdir, enabled=is_main),
        is_main=is_main,
        change=change,
    )


def _check_start(
    config: ml_collections.ConfigDict,
    plan: RunPlan,
    *,
    num_train: int,
    fresh: bool,
    is_main: bool,
    bn_momentum: float | None = None,
) -> None:
    """Refuses (``ValueError``) or names, before any work, a start that would look like success
    and is not: a fine-tune from random weights, a batch larger than the training split, an
    average of the weights that cannot move in the run's length, BatchNorm statistics that
    cannot follow the training in it, ImageNet rates on weights."""
    from cnn_flax.training import optim

    finetune_recipe = str(config.recipe or "").startswith("finetune")
    from_scratch = bool(config.finetune.get("from_scratch", False))
    if fresh and finetune_recipe and not config.init_from and not from_scratch:
        raise ValueError(
            "--config=finetune starts from published weights, but --config.init_from is not "
            "set: pass --config.init_from=WEIGHTS (a .pth or .safetensors file, a converted "
            "checkpoint or a workdir), or train from random weights on purpose with the "
            f"model's own recipe, --config={config.model} (or keep this recipe with "
            "--config.finetune.from_scratch=true)."
        )
    if plan.global_batch > num_train:
        raise ValueError(
            f"batch_size {plan.global_batch} is larger than the training split of "
            f"{config.data.name} ({num_train} examples): every step would repeat images and "
            f"the learning rate would scale to {optim.peak_learning_rate(config, plan):.3g}. "
            f"Pass --config.batch_size={_largest_batch_under(num_train)} or less."
        )
    lagging = _lagging_batch_norm(config, plan, bn_momentum) if fresh else None
    if fresh and config.init_from and not finetune_recipe:
        batch_stats = _trains_on_batch_statistics(config, bn_momentum)
        bn_causes = "; ".join(c for c in (batch_stats, lagging) if c)
        _say(
            is_main,
            f"Note: --config.init_from with the recipe {config.recipe!r}, made to train from "
            f"scratch: {bn_causes + '; its' if bn_causes else 'its'} learning rates, schedule "
            f"and weight average are sized for training from scratch. To fine-tune, "
            f"--config=finetune:{config.model}"
            + (" (or --config.finetune.freeze_bn_stats=true)." if bn_causes else "."),
        )
    elif lagging:
        fix = (
            "--config.finetune.freeze_bn_stats=true keeps the loaded ones"
            if config.init_from
            else "train longer or lower --config.model_overrides.bn_momentum (e.g. 0.9)"
        )
        _say(is_main, f"Note: {lagging}: {fix}.")
    ema = plan.ema
    if ema is not None and not ema.tf_warmup and 0 < ema.decay < 1:
        half_life = math.log(0.5) / math.log(ema.decay)
        ema_updates = -(-plan.total_steps // ema.every)
        if half_life > ema_updates:
            _say(
                is_main,
                f"Note: the weight average (ema_decay {ema.decay:g}) has a half-life of "
                f"{half_life:,.0f} updates, longer than this run's {ema_updates:,}: the "
                "averaged weights stay close to the starting ones. Evaluation reports both; "
                "the Done line reports the raw weights. Set --config.ema_decay=None or a "
                "smaller decay to average within the run.",
            )


def _lagging_batch_norm(
    config: ml_collections.ConfigDict, plan: RunPlan, momentum: float | None
) -> str | None:
    """What is wrong with BatchNorm's running statistics at the end of this run, or None.

    Training normalises with each batch's statistics; evaluation with running averages that keep
    ``momentum`` of their value per update (Ioffe and Szegedy 2015, sec. 3.1). TensorFlow's
    recipes use 0.99 (MobileNetV3, EfficientNet-B5+ and Lite; MnasNet 0.9997), sized for
    hundreds of thousands of steps: after a short run the averages still hold ``momentum **
    updates`` of their starting values (the loaded weights' ImageNet statistics, or 0 and 1 from
    scratch) and evaluation normalises with statistics the network never trained with. Measured
    on real weights: EfficientNet-Lite0 on 64-px digits, 120 steps under its own recipe, 57.8%
    eval top-1 with them updated, 66.7% at momentum 0.9, 82.8% with the loaded ones kept
    (``finetune.freeze_bn_stats``); the finetune recipe 85.6%, 31.1% with them updated. A share
    above 5% is named.
    """
    if not momentum or not 0 < momentum < 1 or freezes_batch_norm(config):
        return None
    if int(config.get("bn_reestimate_batches", 0) or 0) > 0:
        return None  # evaluation re-estimates the statistics first: nothing of the start is left
    updates = plan.micro(plan.total_steps)
    left = momentum**updates
    if left <= 0.05:
        return None
    start = "the loaded ones" if config.init_from else "their initial 0 and 1"
    return (
        f"BatchNorm's running statistics (momentum {momentum:g}) would still hold {left:.0%} of "
        f"{start} after this run's {updates:,} updates, so evaluation would normalise with "
        "statistics training never used"
    )


def _trains_on_batch_statistics(config: ml_collections.ConfigDict, momentum: float | None) -> str:
    """Why loaded weights under a scratch recipe lose most of a small fine-tune, or "".

    The recipe trains BatchNorm in training mode: each layer normalises with the batch's own
    statistics and the running ones follow them, so the loaded ImageNet statistics the backbone
    was trained with are gone. On small data that, not the running averages' lag, is most of the
    loss: EfficientNet-Lite0's real weights on 64-px digits, 120 steps of batch 32 under its own
    recipe, 57.8% eval top-1; 61.1% with the statistics re-estimated before evaluation (no lag
    left, ``bn_reestimate_batches=20``); 82.8% with the loaded ones kept
    (``finetune.freeze_bn_stats=true``), the finetune recipe's default (85.6%).
    """
    if not momentum or freezes_batch_norm(config):
        return ""
    return (
        "BatchNorm would normalise with this data's batch statistics instead of the loaded ones "
        "(on small data most of a fine-tune's accuracy)"
    )


def _largest_batch_under(n: int) -> int:
    """The largest power of two not above ``n`` (a batch size that fits the split)."""
    return 1 << (max(n, 1).bit_length() - 1)


def _starting_state(run: _Run) -> tuple[int, TrainState]:
    """``(micro-step, state)`` the run starts from: the newest checkpoint that restores, else the
    initial weights (random or ``config.init_from``'s). Records an allowed config change and
    writes the run's files once the run goes on."""
    config, plan, workdir = run.config, run.plan, run.workdir
    init_state = _state_initializer(config, run.model, run.tx)
    replicated = parallel.replicated_sharding(run.mesh)
    start_step = run.manager.latest_step() or 0
    if start_step:
        abstract_state = _abstract(jax.eval_shape(init_state), replicated)
        start_step, state = _restore(run.manager, abstract_state, plan=plan, is_main=run.is_main)
    else:  # random, or from config.init_from's weights; records what the run starts from
        _say(run.is_main, f"Initialising {config.model} ...")
        state = finetune.initial_state(
            config,
            init_state,
            tx=run.tx,
            sharding=replicated,
            workdir=workdir,
            data_source=run.data,
            loss_scale=steps.initial_loss_scale(config),
        )
    if run.is_main and start_step < plan.micro(plan.total_steps):
        run_record.record(workdir, run.change)
        _write_run_files(workdir, config, num_classes=run.num_classes, data_source=run.data)
    return start_step, state


def _state_initializer(
    config: ml_collections.ConfigDict, model: nn.Module, tx: optax.GradientTransformation
) -> Callable[[], TrainState]:
    """The fresh state as a function of nothing, for ``jit`` (a new run) or ``eval_shape``."""
    size = int(config.data.image_size)
    dtype = steps.compute_dtype(config.dtype)

    def init_state() -> TrainState:
        dummy = jnp.zeros((1, size, size, 3), dtype)
        variables = model.init(jax.random.key(int(config.seed)), dummy, train=False)
        return create_train_state(
            variables,
            tx,
            use_ema=config.ema_decay is not None,
            ema_batch_stats=bool(config.ema_batch_stats),
            loss_scale=steps.initial_loss_scale(config),
        )

    return init_state


def _restore(
    manager: checkpoint.CheckpointManager, abstract_state: Any, *, plan: RunPlan, is_main: bool
) -> tuple[int, TrainState]:
    """The newest checkpoint that restores, as ``(micro-step, state)``; says which it skipped."""
    latest = manager.latest_step() or 0
    total = plan.micro(plan.total_steps)
    if latest < total:
        _say(
            is_main,
            f"Resuming from step {plan.updates(latest)} (workdir {manager.directory.parent}).",
        )
    step, state, skipped = manager.restore_newest(abstract_state)
    for why in skipped:
        _say(is_main, f"Skipped checkpoint {why}")
    if skipped and step < total:
        _say(is_main, f"Resuming from step {plan.updates(step)} instead, the newest that restores.")
    return step, state


def _abstract(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, flush=True)


def _finished_message(
    workdir: pathlib.Path, plan: RunPlan, start_step: int, allow_config_change: bool
) -> str:
    flag = "" if allow_config_change else " (with --config_change=allow)"
    return (
        f"Workdir {workdir} already finished at step {plan.updates(start_step)} (total_steps "
        f"{plan.total_steps}, {plan.epoch(start_step):.2f} epochs); nothing to train. Raise "
        f"--config.total_steps or --config.num_epochs{flag} to train longer, or pass a new "
        "--workdir."
    )


def _write_run_files(
    workdir: pathlib.Path,
    config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    data_source: Any = None,
):
    workdir.mkdir(parents=True, exist_ok=True)
    # A folder set's own held-out part: which images the model never trained on.
    held_out = getattr(data_source, "get_held_out_record", None)
    record = held_out(config.data) if held_out is not None else None
    if record is not None:
        (workdir / "held_out.json").write_text(json.dumps(record, indent=1) + "\n")
    (workdir / "config.json").write_text(
        config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
    )
    overrides = config.model_overrides.to_dict() if config.model_overrides else {}
    meta = {"model": config.model, "num_classes": num_classes, "overrides": overrides}
    (workdir / checkpoint.MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


# --- the loop's pieces ----------------------------------------------------------------------------


class _TrainStep:
    """The jitted train step over the mesh, state donated, compiled once on the first batch."""

    def __init__(self, run: _Run):
        replicated = parallel.replicated_sharding(run.mesh)
        step = steps.make_train_step(
            run.model,
            run.tx,
            config=run.config,
            num_classes=run.num_classes,
            learning_rate_fn=run.lr_fn,
            grad_accum_steps=run.plan.grad_accum_steps,
            ema=run.plan.ema,
        )
        self._jitted = jax.jit(
            step,
            in_shardings=(replicated, parallel.data_sharding(run.mesh)),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        self._mesh = run.mesh
        self._compiled: Any = None

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def compile(self, state: TrainState, batch: dict) -> float | None:
        """Compiles for these shapes; returns the FLOPs one device runs per step (or None)."""
        lowered = parallel.lower_on_mesh(self._jitted, self._mesh, state, batch)
        self._compiled = lowered.compile()
        return metrics.step_flops_per_device(
            lowered, self._jitted, state, batch, num_devices=jax.device_count()
        )

    def __call__(self, state: TrainState, batch: dict) -> tuple[TrainState, metrics.Pairs]:
        return self._compiled(state, batch)


def throughput_meter(
    config: ml_collections.ConfigDict,
    plan: RunPlan,
    *,
    device_kind: str,
    num_devices: int,
    flops_per_device_step: float | None,
) -> metrics.Throughput:
    """The run's images/s and MFU meter: the peak of ``device_kind`` in the run's compute dtype,
    the examples of one micro-step (what one timed step processes)."""
    return metrics.Throughput.for_run(
        device_kind=device_kind,
        dtype=config.dtype,
        global_batch=plan.micro_batch,
        num_devices=num_devices,
        flops_per_device_step=flops_per_device_step,
    )


class _Reporter:
    """Writes an interval's train scalars (metrics.jsonl, TensorBoard, the bar)."""

    def __init__(self, run: _Run, bar: metrics.ProgressBar):
        self._plan = run.plan
        self._writer = run.writer
        self._bar = bar
        self.throughput: metrics.Throughput | None = None  # known once the step is compiled

    def __call__(self, done: int, interval: metrics.PendingMetrics) -> None:
        scalars = {k: v for k, v in interval.result().items() if not metrics.is_flag(k)}
        if self.throughput is not None:
            seconds = interval.wall_time
            scalars.update(self.throughput.scalars(steps=len(interval.steps), seconds=seconds))
        scalars["epoch"] = self._plan.epoch(done)
        self._writer.write(self._plan.updates(done), scalars, prefix="train")
        self._bar.show(scalars)


class _Checkpoints:
    """Saves states once every step before them is known to be finite; remembers the last."""

    def __init__(self, run: _Run, metric_intervals: intervals.MetricIntervals, *, start_step: int):
        self._manager = run.manager
        self._intervals = metric_intervals
        self.last_saved: int | None = start_step or None

    def save(self, done: int, state: TrainState, *, eval_metrics: dict | None) -> None:
        self._intervals.settle()  # never write a state whose loss went non-finite
        self._manager.save(done, state, metrics=eval_metrics)
        self.last_saved = done

    def save_if_new(self, done: int, state: TrainState) -> None:
        if self.last_saved != done:
            self.save(done, state, eval_metrics=None)

    def nonfinite_error(self, err: intervals.NonFiniteError, plan: RunPlan) -> TrainingError:
        good = (
            f"the last good checkpoint, step {plan.updates(self.last_saved)}, is kept"
            if self.last_saved
            else "no checkpoint had been saved yet"
        )
        parts = [_NONFINITE_PARTS.get(flag, flag) for flag in err.flags]
        what = " and ".join(filter(None, [", ".join(parts[:-1]), parts[-1]]))
        return TrainingError(
            f"The {what} became non-finite (inf or nan) at step {plan.updates(err.step - 1) + 1};"
            f" training stopped and nothing after it was saved ({good}). Lower optimizer.lr, "
            "add warm-up (schedule.warmup_epochs), set clip_grad_norm, or use "
            "dtype=bfloat16/float32."
        )


# What each of the train step's non-finite flags (cnn_flax.steps) stands for, for the message.
_NONFINITE_PARTS = {
    metrics.NONFINITE: "loss or gradient",
    f"{metrics.NONFINITE}_params": "parameters",
    f"{metrics.NONFINITE}_batch_stats": "BatchNorm statistics (batch_stats)",
    f"{metrics.NONFINITE}_opt_state": "optimizer state",
    f"{metrics.NONFINITE}_ema_params": "EMA weights",
    f"{metrics.NONFINITE}_ema_batch_stats": "EMA BatchNorm statistics",
}


class _Profile:
    """A ``jax.profiler`` trace of a few steps shortly after the compile (the steady state)."""

    def __init__(self, directory: pathlib.Path, *, start_step: int, enabled: bool):
        self._directory = directory
        self._window = (start_step + 3, start_step + 8) if enabled else None
        self._tracing = False

    def before_step(self, step: int) -> None:
        if self._window and step == self._window[0]:
            jax.profiler.start_trace(str(self._directory))
            self._tracing = True

    def after_step(self, done: int, state: TrainState) -> None:
        if self._tracing and done == self._window[1]:
            self.stop(state)

    def stop(self, state: TrainState) -> None:
        if self._tracing:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self._tracing = False


class _StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop polls, so it can save and exit cleanly."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Outside the main thread signals cannot be handled: leave them alone.
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _signal_agreed(stop: _StopSignal, *, at_log: bool) -> bool:
    """Whether to stop for a signal. With several processes all must stop at the same step, so
    they agree (one small all-gather) at log steps only, never in between."""
    received = stop.received is not None
    if jax.process_count() == 1:
        return received
    if not at_log:
        return False
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.int32(received))))


def _compile(
    run: _Run, train_step: _TrainStep, state: TrainState, batch: dict
) -> metrics.Throughput:
    """Compiles the train step (said first: it takes a while) and returns the run's meter."""
    _say(run.is_main, f"Compiling the train step ({run.config.model}) ...")
    flops = train_step.compile(state, batch)
    return throughput_meter(
        run.config,
        run.plan,
        device_kind=run.mesh.devices.flat[0].device_kind,
        num_devices=run.mesh.size,
        flops_per_device_step=flops,
    )


def _evaluate_and_save(
    run: _Run,
    state: TrainState,
    *,
    done: int,
    evaluator: Evaluator,
    metric_intervals: intervals.MetricIntervals,
    checkpoints: _Checkpoints,
    clock: intervals.Stopwatch,
    bar: metrics.ProgressBar,
) -> dict[str, float] | None:
    """The evaluation and checkpoint due after ``done`` micro-steps; returns the evaluation
    (``{"eval_top1": ...}``) if one ran."""
    plan = run.plan
    evaluate = plan.is_eval_step(done)
    # keep_best: every evaluated state is a candidate for the best checkpoint.
    save = plan.is_checkpoint_step(done) or (evaluate and plan.keep_best)
    if not (evaluate or save):
        return None
    # Outside the pause: waiting for the steps in flight is their own time, counted in img/s.
    metric_intervals.settle()
    evaluated = None
    with clock.paused():  # evaluation and saves do not count towards img/s
        if evaluate:
            evaluated = {"eval_" + k: v for k, v in evaluator(state).items()}
            step = plan.updates(done)
            _check_eval_finite(evaluated, step=step, last_saved=checkpoints.last_saved, plan=plan)
            run.writer.write(
                step, {k[len("eval_") :]: v for k, v in evaluated.items()}, prefix="eval"
            )
            bar.write(_format_eval(step, evaluated))
        if save:
            checkpoints.save(done, state, eval_metrics=evaluated)
    return evaluated


def _check_eval_finite(
    evaluated: dict[str, float], *, step: int, last_saved: int | None, plan: RunPlan
) -> None:
    """A non-finite evaluation loss fails the run as a non-finite train state does: the weights
    are finite but predict nonsense (e.g. a batch far too large for its learning rate)."""
    bad = [k for k in ("eval_loss", "eval_ema_loss") if not math.isfinite(evaluated.get(k, 0.0))]
    if bad:
        good = f"step {plan.updates(last_saved)}" if last_saved else "none yet"
        raise TrainingError(
            f"The evaluation loss ({', '.join(bad)}) is non-finite (inf or nan) at step {step}; "
            f"training stopped and this state was not saved (last checkpoint: {good}). Lower "
            "optimizer.lr or batch_size, add warm-up (schedule.warmup_epochs), or set "
            "clip_grad_norm."
        )


def _stop_requested(stop: _StopSignal, *, done: int, plan: RunPlan) -> bool:
    """Whether a signal asks to stop before the step after ``done`` is queued."""
    return _signal_agreed(stop, at_log=plan.is_log_step(done))


def _format_eval(step: int, evaluated: dict[str, float]) -> str:
    parts = [f"step {step}: eval top1 {100 * evaluated['eval_top1']:.2f}%"]
    parts.append(f"top5 {100 * evaluated['eval_top5']:.2f}%")
    if "eval_ema_top1" in evaluated:
        parts.append(f"EMA top1 {100 * evaluated['eval_ema_top1']:.2f}%")
    parts.append(f"({int(evaluated['eval_num_examples'])} examples)")
    return ", ".join(parts)


def _release_in_background(last_reference: list) -> None:
    """Drops the train iterator (the list's only item, its last reference) on a daemon thread.

    Destroying a tf.data iterator joins its autotune thread (``Model::OptimizeLoop``), which with
    TensorFlow 2.21 sometimes sleeps out its whole optimisation period instead of waking on
    cancellation: 13-48 s at the end of the quickstart in about half the runs (native stacks taken
    with gdb during the wait). The run is complete by then, so nothing needs to wait for it.
    """
    threading.Thread(
        target=last_reference.clear, name="release_train_iterator", daemon=True
    ).start()


# --- the loop -------------------------------------------------------------------------------------


# At most this many train steps are queued on the device: enough to keep it busy (one runs while
# the next waits), few enough that a stop signal finds little left to finish.
STEPS_AHEAD = 2


def _loop(
    run: _Run,
    state: TrainState,
    *,
    start_step: int,
    stop_after: int | None,
    profile: bool,
    show_progress: bool,
) -> TrainResult:
    # The loop counts micro-steps (= state.step, what the data order and the checkpoints are
    # keyed by); the plan's cadences and the logs are in optimizer updates.
    plan = run.plan
    total = plan.micro(plan.total_steps)
    end = total if stop_after is None else min(total, plan.micro(stop_after))
    train_step = _TrainStep(run)
    evaluator = Evaluator(
        run.model,
        config=run.config,
        num_classes=run.num_classes,
        mesh=run.mesh,
        data_source=run.data,
        batch_size=plan.global_batch,
    )
    # After a change of batch size the stream goes on from the images seen, not from a step.
    moved = {"start_example": plan.images(start_step)} if plan.schedule_offset else {}
    batches = run.data.create_train_iterator(
        run.config.data,
        global_batch_size=plan.micro_batch,
        seed=int(run.config.seed),
        start_step=start_step,
        sharding=parallel.data_sharding(run.mesh),
        **moved,
    )
    bar = metrics.ProgressBar(total=total, initial=start_step, enabled=show_progress)
    clock = intervals.Stopwatch()
    reporter = _Reporter(run, bar)
    metric_intervals = intervals.MetricIntervals(
        first_step=start_step,
        stopwatch=clock,
        report=reporter,
        limit=STEPS_AHEAD,
        on_done=bar.update,  # the bar counts steps completed, not queued
    )
    checkpoints = _Checkpoints(run, metric_intervals, start_step=start_step)
    profiler = _Profile(run.workdir / "profile", start_step=start_step, enabled=profile)
    eval_metrics: dict[str, float] = {}
    reason = StopReason.FINISHED
    done = start_step
    try:
        with _StopSignal() as stop:
            while done < end:
                metric_intervals.make_room()  # waits for the oldest step while STEPS_AHEAD run
                if _stop_requested(stop, done=done, plan=plan):
                    reason = StopReason.SIGNAL
                    break
                batch = next(batches)
                if not train_step.compiled:
                    reporter.throughput = _compile(run, train_step, state, batch)
                    metric_intervals.restart_clock()
                profiler.before_step(done)
                state, step_metrics = train_step(state, batch)
                done += 1
                metric_intervals.add(step_metrics)
                profiler.after_step(done, state)
                if plan.is_log_step(done):
                    metric_intervals.close(done)
                evaluated = _evaluate_and_save(
                    run,
                    state,
                    done=done,
                    evaluator=evaluator,
                    metric_intervals=metric_intervals,
                    checkpoints=checkpoints,
                    clock=clock,
                    bar=bar,
                )
                eval_metrics = evaluated or eval_metrics
            if reason is StopReason.FINISHED and done < total:
                reason = StopReason.STOP_AFTER
            if reason.interrupted:
                checkpoints.save_if_new(done, state)  # waits for the steps in flight first
                why = reason.value if reason is StopReason.SIGNAL else f"stop_after={stop_after}"
                bar.write(
                    f"Stopped at step {plan.updates(done)} on {why}; checkpoint saved, "
                    "rerun to resume."
                )
            profiler.stop(state)
            metric_intervals.settle()
            run.manager.wait()
    except intervals.NonFiniteError as err:
        raise checkpoints.nonfinite_error(err, plan) from None
    finally:
        bar.close()  # before any error message, so that it starts on a line of its own
    last_reference = [batches]
    del batches
    _release_in_background(last_reference)
    # With several processes a stop can be another process's signal: it is reported as SIGTERM.
    by = (stop.received or signal.SIGTERM) if reason is StopReason.SIGNAL else None
    return TrainResult(
        state=state,
        step=plan.updates(done),
        stopped=reason,
        eval_metrics=eval_metrics,
        signal=by,
    )


__all__ = ["StopReason", "TrainResult", "TrainingError", "throughput_meter", "train"]
