"""A run's derived numbers, computed once from a checked config and the data set's size.

Batch per micro-step, gradient accumulation, steps per epoch, total steps, warm-up steps, the
weight EMA's cadence and decay, and the log / eval / checkpoint cadences are read from the config
here and nowhere else; the optimiser, the train step and the loop take a :class:`RunPlan`.

Two step counts appear. An *update* is one optimiser step over ``batch_size`` examples; it is
what ``total_steps``, the cadences, the logs and the learning-rate schedule count. A
*micro-step* is one jitted train step over ``batch_size / grad_accum_steps`` examples; it is what
``TrainState.step``, the input order and checkpoint names count. They differ only when
``grad_accum_steps > 1``.

A run resumed with another batch size (``--config_change=allow``) keeps its length and its
schedule in *images*: the plan carries the change point (:class:`Origin`, the updates done and
images seen when the current batch size took effect), and the schedule, the epoch counter, the
end of the run and the position in the data stream are functions of the images seen since the
start. A run that never changed its batch has the origin (0, 0) and the step arithmetic of an
unchanged run, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections


@dataclasses.dataclass(frozen=True)
class EmaPlan:
    """When and how the exponential moving average of the weights advances, in updates.

    torchvision's reference recipe (references/classification/train.py, ``--model-ema``) updates
    its average after every ``every``-th iteration of each epoch (``i % model_ema_steps == 0``,
    ``i`` counted from 0 within the epoch), with a decay adjusted for the batch, the cadence and
    the run's length, and while the learning rate warms up it keeps resetting the average to the
    weights. :func:`cnn_flax.training.optim.ema_step` applies this plan.

    Attributes:
      decay: decay of one EMA update (after :func:`torchvision_ema_decay` when
        ``config.ema_adjust``).
      every: EMA updates happen after the updates whose index within their data epoch is a
        multiple of this (``config.ema_every_steps``; 1: after every update).
      steps_per_epoch: updates per data epoch, the period ``every`` counts within.
      copy_through: EMA updates at update indices ``<= copy_through`` copy the weights instead of
        averaging them (``config.ema_copy_in_warmup``: every EMA update of the warm-up and the
        first one after it, as torchvision's reset of ``AveragedModel.n_averaged``); -1: none.
      tf_warmup: TensorFlow's ``num_updates`` warm-up, ``min(decay, (1 + t) / (10 + t))``.
      batch_stats: BatchNorm statistics are averaged too (torchvision's ``use_buffers=True``).
    """

    decay: float
    every: int = 1
    steps_per_epoch: int = 1
    copy_through: int = -1
    tf_warmup: bool = False
    batch_stats: bool = False

    def is_update(self, update: int) -> bool:
        """Whether the EMA advances after update ``update`` (0-based); host-side twin of the
        on-device test in :func:`cnn_flax.training.optim.ema_step`."""
        return (update % self.steps_per_epoch) % self.every == 0

    def updates_in(self, first: int, last: int) -> int:
        """EMA updates after the updates in ``[first, last)``."""
        return sum(self.is_update(u) for u in range(first, last))


def torchvision_ema_decay(
    decay: float, *, global_batch: int, every: int, num_epochs: float
) -> float:
    """The decay of one EMA update under torchvision's adjustment.

    ``alpha = min(1, (1 - decay) * global_batch * every / num_epochs)`` and the decay used is
    ``1 - alpha`` (references/classification/train.py, after pycls' ``net.py``): the adjustment
    approximates ``1 / number of EMA updates`` up to the data set's size, so the same
    ``--model-ema-decay`` averages over a similar share of the run whatever the batch, the
    cadence or the number of epochs. torchvision's ResNet-50 V2 run (batch 1024, every 32
    iterations, 600 epochs, 0.99998) averages with 1 - 2e-5 * 1024 * 32 / 600 = 0.998908.
    """
    alpha = min(1.0, (1.0 - decay) * global_batch * every / num_epochs)
    return 1.0 - alpha


def _first_ema_update_from(update: int, *, every: int, steps_per_epoch: int) -> int:
    """The first update index ``>= update`` after which the EMA advances."""
    epoch, index = divmod(update, steps_per_epoch)
    index = -(-index // every) * every
    if index >= steps_per_epoch:
        return (epoch + 1) * steps_per_epoch
    return epoch * steps_per_epoch + index


def make_ema_plan(
    config: ml_collections.ConfigDict, *, steps_per_epoch: int, warmup_steps: int
) -> EmaPlan | None:
    """The EMA plan of a checked config (``None`` when ``config.ema_decay`` is unset)."""
    if config.ema_decay is None:
        return None
    every = int(config.ema_every_steps)
    decay = float(config.ema_decay)
    if config.ema_adjust:
        decay = torchvision_ema_decay(
            decay,
            global_batch=int(config.batch_size),
            every=every,
            num_epochs=float(config.num_epochs),
        )
    copy_through = -1
    if config.ema_copy_in_warmup:
        copy_through = _first_ema_update_from(
            warmup_steps, every=every, steps_per_epoch=steps_per_epoch
        )
    return EmaPlan(
        decay=decay,
        every=every,
        steps_per_epoch=steps_per_epoch,
        copy_through=copy_through,
        tf_warmup=bool(config.ema_warmup),
        batch_stats=bool(config.ema_batch_stats),
    )


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where the current batch size took effect: after ``updates`` updates that had seen
    ``images`` examples (``(0, 0)``: the run's first batch size)."""

    updates: int = 0
    images: int = 0


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The step arithmetic of one run.

    Attributes:
      global_batch: examples per update over all devices and processes (``batch_size``).
      grad_accum_steps: micro-steps per update.
      steps_per_epoch: updates per pass over the training split (at least 1).
      total_steps: updates of the whole run.
      schedule_steps_per_epoch: updates per epoch of the learning-rate schedule: ``total_steps /
        num_epochs`` when ``total_steps`` is set (a short run keeps the recipe's shape), else
        ``steps_per_epoch``.
      warmup_steps: updates of the learning-rate warm-up, ``round(schedule.warmup_epochs *
        schedule_steps_per_epoch)``.
      log_every: updates between logged train metrics.
      eval_every: updates between evaluations (the last update is always evaluated).
      checkpoint_every: updates between checkpoints; 0 saves only at the end.
      keep_best: every evaluated state is also a checkpoint candidate.
      ema: the weight EMA's plan, or ``None`` without one.
      origin: the change point of the current batch size (:class:`Origin`).
      schedule_offset: update count of this batch size's schedule at update 0, ``origin.images /
        global_batch - origin.updates``: the schedule, the epoch counter and ``total_steps`` are
        in updates of the current batch counted from the run's first image (0 without a
        change of batch size).
    """

    global_batch: int
    grad_accum_steps: int
    steps_per_epoch: int
    total_steps: int
    schedule_steps_per_epoch: float
    log_every: int
    eval_every: int
    checkpoint_every: int
    keep_best: bool
    warmup_steps: int = 0
    ema: EmaPlan | None = None
    origin: Origin = Origin()
    schedule_offset: float = 0.0

    @property
    def micro_batch(self) -> int:
        """Examples per jitted step over all devices."""
        return self.global_batch // self.grad_accum_steps

    def micro(self, updates: int) -> int:
        """``updates`` in micro-steps."""
        return updates * self.grad_accum_steps

    def updates(self, micro_steps: int) -> int:
        """Whole updates done after ``micro_steps`` micro-steps."""
        return micro_steps // self.grad_accum_steps

    def epoch(self, micro_steps: int) -> float:
        """Epochs (fractional, of ``steps_per_epoch`` updates each) done after ``micro_steps``
        micro-steps, counted in images from the run's start."""
        if not self.schedule_offset:
            return micro_steps / self.micro(self.steps_per_epoch)
        return (micro_steps / self.grad_accum_steps + self.schedule_offset) / self.steps_per_epoch

    def images(self, micro_steps: int) -> int:
        """Examples seen from the run's start after ``micro_steps`` micro-steps."""
        since = micro_steps - self.micro(self.origin.updates)
        return self.origin.images + since * self.micro_batch

    def is_log_step(self, done: int) -> bool:
        """Whether the loop logs after micro-step count ``done``."""
        return done % self.micro(self.log_every) == 0

    def is_eval_step(self, done: int) -> bool:
        return done % self.micro(self.eval_every) == 0 or done == self.micro(self.total_steps)

    def is_checkpoint_step(self, done: int) -> bool:
        every = self.micro(self.checkpoint_every)
        return done == self.micro(self.total_steps) or bool(every and done % every == 0)


def steps_for_epochs(num_epochs: float, steps_per_epoch: int) -> int:
    """``ceil(num_epochs * steps_per_epoch)``: updates in ``num_epochs`` epochs."""
    return int(math.ceil(num_epochs * steps_per_epoch - 1e-9))


def make_run_plan(
    config: ml_collections.ConfigDict, *, num_train: int, origin: Origin = Origin()
) -> RunPlan:
    """The plan of ``config`` (checked by :func:`cnn_flax.training.config_checks.check_config`) on a
    training split of ``num_train`` examples, with the current batch size in effect from
    ``origin`` (a resume after a change of batch size; see :class:`Origin`)."""
    batch = int(config.batch_size)
    steps_per_epoch = max(1, num_train // batch)
    if config.total_steps is not None:
        total = int(config.total_steps)
        schedule_spe = total / float(config.num_epochs)
    else:
        total = steps_for_epochs(float(config.num_epochs), steps_per_epoch)
        schedule_spe = float(steps_per_epoch)
    warmup = int(round(float(config.schedule.warmup_epochs) * schedule_spe))
    offset = origin.images / batch - origin.updates
    if offset:  # the run's end in images, in updates of the current batch from the origin
        total = max(origin.updates, steps_for_epochs(total - offset, 1))
    return RunPlan(
        global_batch=batch,
        grad_accum_steps=int(config.grad_accum_steps),
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        schedule_steps_per_epoch=schedule_spe,
        log_every=int(config.log_every_steps),
        eval_every=int(config.eval_every_steps),
        checkpoint_every=int(config.checkpoint_every_steps),
        keep_best=bool(config.keep_best),
        warmup_steps=warmup,
        ema=make_ema_plan(config, steps_per_epoch=steps_per_epoch, warmup_steps=warmup),
        origin=origin,
        schedule_offset=offset,
    )


__all__ = [
    "EmaPlan",
    "Origin",
    "RunPlan",
    "make_ema_plan",
    "make_run_plan",
    "steps_for_epochs",
    "torchvision_ema_decay",
]
