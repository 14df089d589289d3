"""A run's derived numbers, computed once from a checked config and the data set's size.

Batch per micro-step, gradient accumulation, steps per epoch, total steps and the log / eval /
checkpoint cadences are read from the config here and nowhere else; the optimiser, the train
step and the loop take a :class:`RunPlan`.

Two step counts appear. An *update* is one optimiser step over ``batch_size`` examples; it is
what ``total_steps``, the cadences, the logs and the learning-rate schedule count. A
*micro-step* is one jitted train step over ``batch_size / grad_accum_steps`` examples; it is what
``TrainState.step``, the input order and checkpoint names count. They differ only when
``grad_accum_steps > 1``.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections


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
      log_every: updates between logged train metrics.
      eval_every: updates between evaluations (the last update is always evaluated).
      checkpoint_every: updates between checkpoints; 0 saves only at the end.
      keep_best: every evaluated state is also a checkpoint candidate.
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
        """Epochs (fractional) done after ``micro_steps`` micro-steps."""
        return micro_steps / self.micro(self.steps_per_epoch)

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


def make_run_plan(config: ml_collections.ConfigDict, *, num_train: int) -> RunPlan:
    """The plan of ``config`` (checked by :func:`cnn_flax.config_checks.check_config`) on a
    training split of ``num_train`` examples."""
    batch = int(config.batch_size)
    steps_per_epoch = max(1, num_train // batch)
    if config.total_steps is not None:
        total = int(config.total_steps)
        schedule_spe = total / float(config.num_epochs)
    else:
        total = steps_for_epochs(float(config.num_epochs), steps_per_epoch)
        schedule_spe = float(steps_per_epoch)
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
    )


__all__ = ["RunPlan", "make_run_plan", "steps_for_epochs"]
