"""The training loop: init or resume, jitted steps, evaluation, checkpoints, logging.

A workdir holds ``config.json`` (the resolved config), ``model.json`` (what ``evaluate`` and
``predict`` need to rebuild the model), ``metrics.jsonl``, ``tensorboard/`` and ``checkpoints/``.

Resume is exact. Everything random is a function of ``(seed, step)``: the input pipeline starts at
the restored step and yields the batches an uninterrupted run would, and dropout/mixup keys are
``fold_in(key(seed), step)``. The state is restored bit for bit. So stopping (SIGTERM, SIGINT, a
crash after a checkpoint) and resuming ends with the parameters of an uninterrupted run.

BatchNorm (``config.bn_mode``):

* ``"global"`` (default): statistics over the whole global batch, all devices together. Under
  ``jit`` with a sharded batch this is what ``nn.BatchNorm`` computes anyway (XLA adds a small
  all-reduce per layer). The model then computes the same function whatever the number of
  devices, so a recipe's result does not depend on the hardware it ran on, and results can be
  checked against a one-device run. The all-reduce costs little next to convolutions.
* ``"per_device"``: each device normalises its own examples (:class:`cnn_flax.models.norm.
  GroupBatchNorm`), as the multi-GPU reference runs did (Goyal et al. 2017); the per-device batch
  then acts as the BN batch and the result depends on the device count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_flax import checkpoint, finetune, metrics, parallel, steps
from cnn_flax.train_state import TrainState, create_train_state

log = logging.getLogger(__name__)

BN_MODES = ("global", "per_device")


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
    """

    state: TrainState
    step: int
    stopped: str
    eval_metrics: dict[str, float]


# --- set-up helpers -------------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks the fields the loop reads, before any data is touched or anything compiled."""
    steps.compute_dtype(config.dtype)
    if config.bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode={config.bn_mode!r} is not one of {BN_MODES}.")
    for name in ("batch_size", "log_every_steps", "eval_every_steps", "keep_checkpoints"):
        if int(config[name]) < 1:
            raise ValueError(f"{name}={config[name]} must be at least 1.")
    if int(config.checkpoint_every_steps) < 0:
        raise ValueError(
            f"checkpoint_every_steps={config.checkpoint_every_steps} must be >= 0 (0: only at the "
            "end)."
        )


def build_model(config: ml_collections.ConfigDict, *, num_classes: int, num_devices: int) -> Any:
    """The config's model, with per-device BatchNorm injected when ``bn_mode="per_device"``."""
    from cnn_flax.models import create_model
    from cnn_flax.models.norm import per_device_batch_norm

    overrides = dict(config.model_overrides.to_dict()) if config.model_overrides else {}
    dtype = steps.compute_dtype(config.dtype)
    model = create_model(config.model, num_classes=num_classes, dtype=dtype, **overrides)
    if finetune.freezes_batch_norm(config):  # no batch statistics at all: bn_mode is moot
        return finetune.adapt_model(model, config)
    if config.bn_mode == "per_device":
        model = per_device_batch_norm(model, num_devices)
    return model


def _abstract(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


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


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


# --- evaluation -----------------------------------------------------------------------------------


class Evaluator:
    """Compiles the eval step once and runs it over the complete eval split.

    Every example of the split is counted exactly once: the eval iterator pads the last batch and
    marks the padding with ``mask=False``, and the step weights each example by its mask.
    """

    def __init__(self, config, model, *, num_classes: int, mesh, data_module) -> None:
        self._config = config
        self._data = data_module
        self._sharding = parallel.data_sharding(mesh)
        replicated = parallel.replicated_sharding(mesh)
        self._jitted = jax.jit(
            steps.make_eval_step(model, config=config, num_classes=num_classes),
            in_shardings=(replicated, self._sharding),
            out_shardings=replicated,
        )
        self._compiled = None

    def run(self, variables: dict) -> dict[str, float]:
        """``{"top1", "top5", "loss", "num_examples"}`` of ``variables`` on the eval split."""
        pairs = []
        batches = self._data.create_eval_iterator(
            self._config.data,
            global_batch_size=int(self._config.batch_size),
            sharding=self._sharding,
        )
        for batch in batches:
            if self._compiled is None:
                self._compiled = self._jitted.lower(variables, batch).compile()
            pairs.append(self._compiled(variables, batch))
        result = metrics.reduce_pairs(pairs)
        result["num_examples"] = sum(float(np.asarray(p["top1"][1])) for p in pairs)
        return result

    def __call__(self, state: TrainState) -> dict[str, float]:
        """Raw weights, then (``ema_`` prefix) the EMA weights when the state has them."""
        out = self.run(state.variables())
        if state.ema_params is not None:
            ema = self.run(state.variables(ema=True))
            out.update({"ema_" + k: v for k, v in ema.items()})
        return out


# --- the loop -------------------------------------------------------------------------------------


def train(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    profile: bool = False,
    stop_after: int | None = None,
    devices: list[jax.Device] | None = None,
    show_progress: bool = True,
    data_source: Any = None,
) -> TrainResult:
    """Trains (or resumes training) ``config`` in ``workdir``.

    Args:
      config: the resolved training config.
      workdir: output folder; an existing one with checkpoints is resumed from its latest.
      profile: capture a ``jax.profiler`` trace of a few steps into ``workdir/profile``.
      stop_after: stop (with a checkpoint, as on SIGTERM) once this many optimizer updates are
        done in total;
        for tests and time-limited jobs.
      devices: devices of the mesh (default: all devices of all processes).
      show_progress: draw the tqdm progress bar (process 0).
      data_source: an object with the data API's ``get_dataset_info``, ``create_train_iterator``
        and ``create_eval_iterator`` (default: :mod:`cnn_flax.data`); tests pass small stand-ins.

    Returns:
      A :class:`TrainResult`.

    Raises:
      ValueError: bad config values, unknown data set or model (before any compile).
      checkpoint.CheckpointError: the workdir's checkpoint cannot be restored (nothing written).
      TrainingError: the loss became non-finite (the last good checkpoint is kept).
    """
    from cnn_flax import optim

    if data_source is None:
        from cnn_flax import data as data_source
    data = data_source
    validate_config(config)
    workdir = pathlib.Path(workdir).resolve()
    mesh = parallel.create_mesh(devices)
    accum = int(config.get("grad_accum_steps", 1) or 1)
    if accum < 1 or int(config.batch_size) % accum:
        raise ValueError(
            f"grad_accum_steps={accum} must be >= 1 and divide batch_size={config.batch_size}."
        )
    # Each jitted step sees one micro-batch; the optimizer updates every `accum` micro-batches.
    parallel.check_batch_size(int(config.batch_size) // accum, mesh)
    if config.get("compilation_cache_dir"):
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)

    # Data errors (unknown name, ImageNet not prepared) surface here, before any compile.
    num_classes, num_train, num_eval = data.get_dataset_info(config.data)
    batch_size = int(config.batch_size)
    steps_per_epoch = max(1, num_train // batch_size)
    total_steps = optim.total_steps(config, steps_per_epoch=steps_per_epoch)
    model = build_model(config, num_classes=num_classes, num_devices=mesh.size)
    tx = optim.create_optimizer(config, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    lr_fn = optim.create_learning_rate_schedule(
        config, steps_per_epoch=steps_per_epoch, total_steps=total_steps
    )

    replicated = parallel.replicated_sharding(mesh)
    batch_sharding = parallel.data_sharding(mesh)
    size = int(config.data.image_size)

    def init_state() -> TrainState:
        dummy = jnp.zeros((1, size, size, 3), steps.compute_dtype(config.dtype))
        variables = model.init(jax.random.key(int(config.seed)), dummy, train=False)
        return create_train_state(
            variables,
            tx,
            use_ema=config.get("ema_decay") is not None,
            loss_scale=steps.initial_loss_scale(config),
        )

    abstract_state = _abstract(jax.eval_shape(init_state), replicated)
    manager = checkpoint.CheckpointManager(
        workdir, keep=int(config.keep_checkpoints), keep_best=bool(config.keep_best)
    )
    try:
        start_step = manager.latest_step() or 0
        if start_step:
            state = manager.restore(start_step, abstract_state)
        else:  # random, or from config.init_from's weights; records what the run starts from
            state = finetune.initial_state(
                config,
                init_state,
                tx=tx,
                sharding=replicated,
                workdir=workdir,
                data_source=data,
                loss_scale=steps.initial_loss_scale(config),
            )
        is_main = jax.process_index() == 0
        if is_main:
            _write_run_files(workdir, config, num_classes=num_classes)
        writer = metrics.MetricWriter(workdir, enabled=is_main)
        try:
            return _loop(
                config,
                state=state,
                start_step=start_step,
                total_steps=total_steps,
                steps_per_epoch=steps_per_epoch,
                model=model,
                tx=tx,
                lr_fn=lr_fn,
                mesh=mesh,
                batch_sharding=batch_sharding,
                num_classes=num_classes,
                manager=manager,
                writer=writer,
                workdir=workdir,
                profile=profile,
                stop_after=stop_after,
                show_progress=show_progress and is_main,
                data_module=data,
            )
        finally:
            writer.close()
    finally:
        manager.close()


def _write_run_files(workdir: pathlib.Path, config: ml_collections.ConfigDict, *, num_classes: int):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(
        config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
    )
    overrides = config.model_overrides.to_dict() if config.model_overrides else {}
    meta = {"model": config.model, "num_classes": num_classes, "overrides": overrides}
    (workdir / checkpoint.MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _loop(
    config,
    *,
    state,
    start_step,
    total_steps,
    steps_per_epoch,
    model,
    tx,
    lr_fn,
    mesh,
    batch_sharding,
    num_classes,
    manager,
    writer,
    workdir,
    profile,
    stop_after,
    show_progress,
    data_module,
) -> TrainResult:
    # The loop counts micro-steps (= state.step, what the data order and the checkpoints are
    # keyed by); cadences and logs are in optimizer updates of `accum` micro-steps each.
    accum = int(config.get("grad_accum_steps", 1) or 1)
    batch_size = int(config.batch_size) // accum
    log_every = int(config.log_every_steps) * accum
    eval_every = int(config.eval_every_steps) * accum
    ckpt_every = int(config.checkpoint_every_steps) * accum
    total_steps *= accum
    stop_after = None if stop_after is None else stop_after * accum
    replicated = parallel.replicated_sharding(mesh)

    train_step = steps.make_train_step(
        model, tx, config=config, num_classes=num_classes, learning_rate_fn=lr_fn
    )
    jitted = jax.jit(
        train_step,
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    evaluator = Evaluator(
        config, model, num_classes=num_classes, mesh=mesh, data_module=data_module
    )
    batches = data_module.create_train_iterator(
        config.data,
        global_batch_size=batch_size,
        seed=int(config.seed),
        start_step=start_step,
        sharding=batch_sharding,
    )
    end_step = total_steps if stop_after is None else min(total_steps, stop_after)
    bar = metrics.ProgressBar(total=total_steps, initial=start_step, enabled=show_progress)
    peak = metrics.peak_flops_per_device()
    compiled = None
    flops = None
    pending: metrics.PendingMetrics | None = None
    interval: list[dict] = []
    interval_start, interval_t0 = start_step, time.perf_counter()
    last_saved = start_step if start_step else None
    eval_metrics: dict[str, float] = {}
    # A few steps after the compile, so the trace shows the steady state.
    profile_window = (start_step + 3, start_step + 8) if profile else None
    tracing = False
    stopped = "finished"

    def report(p: metrics.PendingMetrics, at_step: int) -> None:
        bad = p.first_nonfinite_step()
        if bad is not None:
            good = f"step {last_saved}" if last_saved else "none yet"
            raise TrainingError(
                f"The loss or gradient became non-finite at step {bad + 1}; training stopped "
                f"(last good checkpoint: {good}, kept). Lower optimizer.lr, add warm-up "
                "(schedule.warmup_epochs), set clip_grad_norm, or use dtype=bfloat16/float32."
            )
        scalars = p.result()
        scalars.pop("nonfinite", None)
        scalars.update(
            metrics.throughput(
                steps=len(p.steps),
                seconds=p.wall_time,
                global_batch=batch_size,
                flops_per_device_step=flops,
                peak_per_device=peak,
                num_devices=mesh.size,
            )
        )
        scalars["epoch"] = at_step / (steps_per_epoch * accum)
        writer.write(at_step // accum, scalars, prefix="train")
        bar.show(scalars)

    def flush(done: int) -> None:
        """Hands the current interval to the host copy and reports the previous one."""
        nonlocal pending, interval, interval_start, interval_t0
        now = time.perf_counter()
        if interval:
            new = metrics.PendingMetrics(interval_start, interval, now - interval_t0)
        else:
            new = None
        if pending is not None:
            report(pending, pending.first_step + len(pending.steps))
        pending, interval, interval_start, interval_t0 = new, [], done, now

    def settle() -> None:
        """Reports everything outstanding (blocks): the state is then known to be finite."""
        nonlocal pending
        flush(interval_start + len(interval))
        if pending is not None:
            report(pending, pending.first_step + len(pending.steps))
            pending = None

    def save(done: int, state: TrainState, *, with_metrics: dict | None) -> None:
        nonlocal last_saved
        settle()  # never write a state whose loss went non-finite
        manager.save(done, state, metrics=with_metrics)
        last_saved = done

    with _StopSignal() as stop:
        step = start_step
        for step in range(start_step, end_step):
            batch = next(batches)
            if compiled is None:
                lowered = jitted.lower(state, batch)
                compiled = lowered.compile()
                flops = metrics.step_flops_per_device(
                    lowered, jitted, state, batch, num_devices=jax.device_count()
                )
                interval_t0 = time.perf_counter()
            if profile_window and step == profile_window[0]:
                jax.profiler.start_trace(str(workdir / "profile"))
                tracing = True
            state, step_metrics = compiled(state, batch)
            interval.append(step_metrics)
            done = step + 1
            bar.update()
            if tracing and done == profile_window[1]:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                tracing = False
            at_log = done % log_every == 0
            if at_log:
                flush(done)
            evaluated = None
            paused_at = time.perf_counter()  # eval and saves do not count towards img/s
            if done % eval_every == 0 or done == total_steps:
                settle()
                evaluated = {"eval_" + k: v for k, v in evaluator(state).items()}
                eval_metrics = evaluated
                writer.write(done // accum, {k[5:]: v for k, v in evaluated.items()}, prefix="eval")
                bar.write(_format_eval(done // accum, evaluated))
            at_checkpoint = done == total_steps or (ckpt_every and done % ckpt_every == 0)
            # keep_best: every evaluated state is a candidate for the best checkpoint.
            if at_checkpoint or (evaluated is not None and config.keep_best):
                save(done, state, with_metrics=evaluated)
            resumed_at = time.perf_counter()
            if interval_t0 <= paused_at:
                interval_t0 += resumed_at - paused_at
            else:  # the interval was restarted during the pause
                interval_t0 = resumed_at
            interrupted = stop.received is not None
            if jax.process_count() > 1:
                interrupted = _any_process(interrupted) if at_log else False
            if interrupted or (stop_after is not None and done == end_step < total_steps):
                stopped = "interrupted"
                if last_saved != done:
                    save(done, state, with_metrics=None)
                why = "a stop signal" if interrupted else f"stop_after={stop_after}"
                bar.write(f"Stopped at step {done} on {why}; checkpoint saved, rerun to resume.")
                step = done
                break
            step = done
        if tracing:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
        settle()
        manager.wait()
        bar.close()
    final_step = max(step, start_step) // accum
    return TrainResult(state=state, step=final_step, stopped=stopped, eval_metrics=eval_metrics)


def _format_eval(step: int, evaluated: dict[str, float]) -> str:
    parts = [f"step {step}: eval top1 {100 * evaluated['eval_top1']:.2f}%"]
    parts.append(f"top5 {100 * evaluated['eval_top5']:.2f}%")
    if "eval_ema_top1" in evaluated:
        parts.append(f"EMA top1 {100 * evaluated['eval_ema_top1']:.2f}%")
    parts.append(f"({int(evaluated['eval_num_examples'])} examples)")
    return ", ".join(parts)


__all__ = [
    "BN_MODES",
    "Evaluator",
    "TrainResult",
    "TrainingError",
    "build_model",
    "train",
    "validate_config",
]
