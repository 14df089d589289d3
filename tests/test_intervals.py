"""The loop's pieces on their own: the clock with pauses, metric intervals fetched one interval
late with the exact non-finite step, the cadences of the run plan, and the progress bar."""

from __future__ import annotations

import time

import jax.numpy as jnp
import pytest

from cnn_flax.configs import get_config
from cnn_flax.training import intervals, metrics
from cnn_flax.training.run_plan import make_run_plan


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stopwatch_leaves_pauses_out():
    clock = _Clock()
    watch = intervals.Stopwatch(clock)
    clock.now += 2.0
    with watch.paused():
        clock.now += 5.0  # an evaluation
    clock.now += 1.0
    assert watch.restart() == pytest.approx(3.0)
    clock.now += 0.5
    with watch.paused():
        clock.now += 1.0
        assert watch.restart() == pytest.approx(0.5)  # restarted during a pause (a settle) ...
        clock.now += 4.0
    clock.now += 0.25
    assert watch.elapsed() == pytest.approx(0.25)  # ... counts from the pause's end


def _step(loss: float, nonfinite: bool = False) -> dict:
    one = jnp.ones(())
    return {"loss": (jnp.asarray(loss), one), "nonfinite": (jnp.asarray(float(nonfinite)), one)}


def test_intervals_report_one_interval_late_with_their_mean():
    reports = []
    metric_intervals = intervals.MetricIntervals(
        first_step=10,
        stopwatch=intervals.Stopwatch(_Clock()),
        report=lambda done, pending: reports.append((done, pending.result()["loss"])),
    )
    for loss in (1.0, 3.0):
        metric_intervals.add(_step(loss))
    metric_intervals.close(12)
    assert reports == []  # on its way to the host
    metric_intervals.add(_step(5.0))
    metric_intervals.close(13)
    assert reports == [(12, 2.0)]
    metric_intervals.settle()
    assert reports == [(12, 2.0), (13, 5.0)]


def test_first_nonfinite_step_is_pinned_exactly():
    metric_intervals = intervals.MetricIntervals(
        first_step=4, stopwatch=intervals.Stopwatch(), report=lambda done, pending: None
    )
    for bad in (False, False, True, True):  # steps 5, 6, 7, 8; 7 is the first bad one
        metric_intervals.add(_step(1.0, bad))
    with pytest.raises(intervals.NonFiniteError) as err:
        metric_intervals.settle()
    assert err.value.step == 7


@pytest.mark.parametrize("accum", [1, 2])
def test_plan_cadences_count_updates(accum):
    config = get_config("quickstart")
    config.update(
        dict(
            grad_accum_steps=accum,
            total_steps=10,
            log_every_steps=4,
            eval_every_steps=3,
            checkpoint_every_steps=5,
        )
    )
    plan = make_run_plan(config, num_train=1437)
    assert (plan.micro_batch, plan.steps_per_epoch) == (32 // accum, 44)
    micro = range(1, plan.micro(10) + 1)
    assert [plan.updates(d) for d in micro if plan.is_log_step(d)] == [4, 8]
    assert [plan.updates(d) for d in micro if plan.is_eval_step(d)] == [3, 6, 9, 10]
    assert [plan.updates(d) for d in micro if plan.is_checkpoint_step(d)] == [5, 10]
    config.checkpoint_every_steps = 0
    plan = make_run_plan(config, num_train=1437)
    assert [plan.updates(d) for d in micro if plan.is_checkpoint_step(d)] == [10]


def test_progress_bar_clock_starts_after_the_first_step():
    """The first step carries the compile; the bar's rate and ETA must not count it."""
    bar = metrics.ProgressBar(total=10, initial=3, enabled=True)
    time.sleep(0.3)  # the compile
    bar.update()
    shown = bar._bar.format_dict
    bar.close()
    assert shown["n"] == 4 and shown["initial"] == 4
    assert shown["elapsed"] < 0.2, shown["elapsed"]
