"""The training loop: init or resume, jitted steps, evaluation, checkpoints, logging.

A workdir holds ``config.json`` (the resolved config), ``model.json`` (what ``evaluate`` and
``predict`` need to rebuild the model), ``metrics.jsonl``, ``tensorboard/`` and ``checkpoints/``,
the lock of the run training there (``.lock``, :mod:`cnn_flax.workdir_lock`) and, after an
allowed config change, ``config_history.jsonl`` (:mod:`cnn_flax.run_record`).

Resume is exact. Everything random is a function of ``(seed, step)``: the input pipeline starts at
the restored step and yields the batches an uninterrupted run would, and dropout/mixup keys are
``fold_in(key(seed), step)``. The state is restored bit for bit. So stopping (SIGTERM, SIGINT, a
crash after a checkpoint) and resuming ends with the parameters of an uninterrupted run.

The loop (:func:`_loop`) reads top to bottom; its pieces each keep their own state:
:class:`cnn_flax.intervals.MetricIntervals` (metrics fetched one interval late, non-finite steps
caught), :class:`cnn_flax.intervals.Stopwatch` (evaluation and saves left out of images/s),
:class:`cnn_flax.run_plan.RunPlan` (the log / eval / checkpoint cadences), and here
:class:`_TrainStep` (compiled once), :class:`_Checkpoints`, :class:`_Profile` and
:class:`_StopSignal`. The model is built by :mod:`cnn_flax.model_builder` and evaluated by
:mod:`cnn_flax.eval_loop`, which ``evaluate`` uses too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cnn_flax import (
    checkpoint,
    finetune,
    intervals,
    metrics,
    parallel,
    run_record,
    steps,
    workdir_lock,
)
from cnn_flax.config_checks import check_config
from cnn_flax.eval_loop import Evaluator
from cnn_flax.model_builder import build_model
from cnn_flax.run_plan import RunPlan, make_run_plan
from cnn_flax.train_state import TrainState, create_train_state

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became non-finite)."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
      state: the final state (replicated global arrays).
      step: optimizer updates taken in total (``state.step`` counts micro-steps, which
        differ when ``grad_accum_steps > 1``).
      stopped: ``"finished"``, or ``"interrupted"`` (signal or ``stop_after``; resumable).
      eval_metrics: the last evaluation (``{}`` if none ran).
      signal: the signal that stopped the run (``signal.SIGTERM``, ``SIGINT``), if one did.
    """

    state: TrainState
    step: int
    stopped: str
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
    from cnn_flax import optim

    if data_source is None:
        from cnn_flax import data as data_source
    check_config(config)
    workdir = pathlib.Path(workdir).resolve()
    workdir_lock.prepare_workdir(workdir)
    mesh = parallel.create_mesh(devices)
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)

    is_main = jax.process_index() == 0
    # Before the data set is read (minutes for a large folder): a second run is refused at once.
    lock = workdir_lock.acquire(workdir, enabled=is_main)
    try:
        # Each start-up phase that takes seconds says so first (imports and data set preparation,
        # the model's initialisation, the compile), so a run is never silent for long.
        _say(is_main, f"Reading data set {config.data.name} ...")
        # Data errors (unknown name, ImageNet not prepared) surface here, before any compile.
        num_classes, num_train, _ = data_source.get_dataset_info(config.data)
        plan = make_run_plan(config, num_train=num_train)
        # Each jitted step sees one micro-batch; the optimizer updates every grad_accum_steps.
        parallel.check_batch_size(plan.micro_batch, mesh)
        model = build_model(config, num_classes=num_classes, num_devices=mesh.size)
        tx = optim.create_optimizer(config, plan)
        init_state = _state_initializer(config, model, tx)
        replicated = parallel.replicated_sharding(mesh)
        manager = checkpoint.CheckpointManager(
            workdir, keep=int(config.keep_checkpoints), keep_best=plan.keep_best
        )
    except BaseException:
        lock.release()
        raise
    try:
        start_step = manager.latest_step() or 0
        # Refused before the restore; recorded only once the run goes on.
        change = run_record.check(
            workdir, config, step=plan.updates(start_step), allow_change=allow_config_change
        )
        if start_step:
            abstract_state = _abstract(jax.eval_shape(init_state), replicated)
            start_step, state = _restore(manager, abstract_state, plan=plan, is_main=is_main)
        else:  # random, or from config.init_from's weights; records what the run starts from
            _say(is_main, f"Initialising {config.model} ...")
            state = finetune.initial_state(
                config,
                init_state,
                tx=tx,
                sharding=replicated,
                workdir=workdir,
                data_source=data_source,
                loss_scale=steps.initial_loss_scale(config),
            )
        if start_step >= plan.micro(plan.total_steps):
            _say(is_main, _finished_message(workdir, plan, start_step))
            return TrainResult(state, plan.updates(start_step), "finished", eval_metrics={})
        if is_main:
            run_record.record(workdir, change)
            _write_run_files(workdir, config, num_classes=num_classes)
        writer = metrics.MetricWriter(workdir, enabled=is_main)
        run = _Run(
            config=config,
            plan=plan,
            model=model,
            tx=tx,
            lr_fn=optim.create_learning_rate_schedule(config, plan),
            mesh=mesh,
            num_classes=num_classes,
            data=data_source,
            workdir=workdir,
            manager=manager,
            writer=writer,
            is_main=is_main,
        )
        try:
            return _loop(
                run,
                state,
                start_step=start_step,
                stop_after=stop_after,
                profile=profile,
                show_progress=show_progress and is_main,
            )
        finally:
            writer.close()
    finally:
        manager.close()
        lock.release()


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


def _finished_message(workdir: pathlib.Path, plan: RunPlan, start_step: int) -> str:
    return (
        f"Workdir {workdir} already finished at step {plan.updates(start_step)} (total_steps "
        f"{plan.total_steps}); nothing to train. Raise --config.total_steps or "
        "--config.num_epochs (with --config_change=allow) to train longer, or pass a new "
        "--workdir."
    )


def _write_run_files(workdir: pathlib.Path, config: ml_collections.ConfigDict, *, num_classes: int):
    workdir.mkdir(parents=True, exist_ok=True)
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
    bar: metrics.ProgressBar,
) -> dict[str, float] | None:
    """The evaluation and checkpoint due after ``done`` micro-steps; returns the evaluation
    (``{"eval_top1": ...}``) if one ran."""
    evaluated = None
    if run.plan.is_eval_step(done):
        metric_intervals.settle()
        evaluated = {"eval_" + k: v for k, v in evaluator(state).items()}
        step = run.plan.updates(done)
        run.writer.write(step, {k[len("eval_") :]: v for k, v in evaluated.items()}, prefix="eval")
        bar.write(_format_eval(step, evaluated))
    # keep_best: every evaluated state is a candidate for the best checkpoint.
    if run.plan.is_checkpoint_step(done) or (evaluated is not None and run.plan.keep_best):
        checkpoints.save(done, state, eval_metrics=evaluated)
    return evaluated


def _stop_reason(
    stop: _StopSignal, *, at_log: bool, done: int, end: int, total: int, stop_after: int | None
) -> str | None:
    """Why the loop stops early after ``done`` micro-steps, or ``None`` to go on."""
    if _signal_agreed(stop, at_log=at_log):
        return "a stop signal"
    if stop_after is not None and done == end < total:
        return f"stop_after={stop_after}"
    return None


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
    batches: Iterator[dict] = run.data.create_train_iterator(
        run.config.data,
        global_batch_size=plan.micro_batch,
        seed=int(run.config.seed),
        start_step=start_step,
        sharding=parallel.data_sharding(run.mesh),
    )
    bar = metrics.ProgressBar(total=total, initial=start_step, enabled=show_progress)
    clock = intervals.Stopwatch()
    reporter = _Reporter(run, bar)
    metric_intervals = intervals.MetricIntervals(
        first_step=start_step, stopwatch=clock, report=reporter
    )
    checkpoints = _Checkpoints(run, metric_intervals, start_step=start_step)
    profiler = _Profile(run.workdir / "profile", start_step=start_step, enabled=profile)
    eval_metrics: dict[str, float] = {}
    stopped = "finished"
    stopped_by: int | None = None
    done = start_step
    try:
        with _StopSignal() as stop:
            for step in range(start_step, end):
                batch = next(batches)
                if not train_step.compiled:
                    reporter.throughput = _compile(run, train_step, state, batch)
                    clock.restart()
                profiler.before_step(step)
                state, step_metrics = train_step(state, batch)
                done = step + 1
                metric_intervals.add(step_metrics)
                bar.update()
                profiler.after_step(done, state)

                at_log = plan.is_log_step(done)
                if at_log:
                    metric_intervals.close(done)
                with clock.paused():  # evaluation and saves do not count towards img/s
                    evaluated = _evaluate_and_save(
                        run,
                        state,
                        done=done,
                        evaluator=evaluator,
                        metric_intervals=metric_intervals,
                        checkpoints=checkpoints,
                        bar=bar,
                    )
                eval_metrics = evaluated or eval_metrics
                why = _stop_reason(
                    stop, at_log=at_log, done=done, end=end, total=total, stop_after=stop_after
                )
                if why is not None:
                    stopped = "interrupted"
                    if why == "a stop signal":  # another process's, when not this one's
                        stopped_by = stop.received or signal.SIGTERM
                    checkpoints.save_if_new(done, state)
                    bar.write(
                        f"Stopped at step {plan.updates(done)} on {why}; checkpoint saved, "
                        "rerun to resume."
                    )
                    break
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
    return TrainResult(
        state=state,
        step=plan.updates(done),
        stopped=stopped,
        eval_metrics=eval_metrics,
        signal=stopped_by,
    )


__all__ = ["TrainResult", "TrainingError", "throughput_meter", "train"]
