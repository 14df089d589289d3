"""The loop's logging intervals: per-step device metrics fetched one interval late, the steps in
flight on the device, and a clock that leaves evaluation and checkpoint time out of the images/s.

The train step returns ``(sum, count)`` device scalars. :class:`MetricIntervals` keeps those of
every step of an interval; when the interval closes it starts their device-to-host copies and
reports the interval before, whose copies are long done, so the hot loop never waits for the
device, yet every step's values are seen and a non-finite loss or state is pinned to its exact
step.

Dispatch is asynchronous: a jitted step returns at once, long before the device has run it. A
clock read at dispatch measures how fast the host queues work, not how fast the device does it
(a fine-tune logged 521 img/s while it computed 0.3 img/s, and its bar reached the end in a
second and then sat for 36 minutes). So :class:`MetricIntervals` also keeps the steps in flight:
at most ``limit`` of them (enough to keep the device fed), waiting for the oldest before another
is queued, and each step is stamped when its result is ready. Intervals are timed between those
stamps, the progress bar moves as steps complete, and a stop signal finds at most ``limit``
steps left to finish.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterator

import jax

from cnn_flax.training.metrics import Pairs, PendingMetrics


class NonFiniteError(RuntimeError):
    """Micro-step ``step`` (1-based) left something non-finite.

    Attributes:
      step: micro-steps done when it happened (the first bad step, counted from 1).
      flags: the step's non-finite flags that were set (``nonfinite`` for the loss or gradient
        norm, ``nonfinite_<part>`` for a part of the state, e.g. ``nonfinite_batch_stats``).
    """

    def __init__(self, step: int, flags: list[str]):
        super().__init__(f"non-finite {', '.join(flags)} at step {step}")
        self.step = step
        self.flags = flags


class Stopwatch:
    """Running time since the last :meth:`restart`, without the time spent in :meth:`paused`.

    Args:
      clock: seconds as a float (``time.perf_counter``; tests pass a fake).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._start = clock()
        self._paused_total = 0.0
        self._paused_since: float | None = None

    def elapsed(self) -> float:
        """Seconds running since the last restart, pauses left out."""
        now = self._clock()
        paused = self._paused_total
        if self._paused_since is not None:
            paused += now - self._paused_since
        return now - self._start - paused

    def restart(self) -> float:
        """Starts a new measurement (inside a pause it starts when the pause ends); returns the
        elapsed time of the one that ends."""
        elapsed = self.elapsed()
        self._start = self._clock()
        self._paused_total = 0.0
        if self._paused_since is not None:
            self._paused_since = self._start
        return elapsed

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside this block does not count (evaluations, checkpoint writes)."""
        self._paused_since = self._clock()
        try:
            yield
        finally:
            self._paused_total += self._clock() - self._paused_since
            self._paused_since = None


class MetricIntervals:
    """Groups the per-step metrics into intervals, reports each one an interval late, and keeps
    at most ``limit`` steps in flight, stamping each when its result is ready.

    Args:
      first_step: micro-steps done before the first step added (the resume point).
      stopwatch: the loop's clock; a step's stamp is its running time when the step's result
        was seen ready, an interval's wall time the difference of two stamps.
      report: called with ``(micro-steps done at the interval's end, interval)`` once the
        interval's values are on the host and known to be finite.
      limit: most steps dispatched and not yet seen complete (:meth:`make_room` waits).
      on_done: called with the number of steps newly seen complete (the progress bar).
    """

    def __init__(
        self,
        *,
        first_step: int,
        stopwatch: Stopwatch,
        report: Callable[[int, PendingMetrics], None],
        limit: int = 2,
        on_done: Callable[[int], None] = lambda n: None,
    ):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._stopwatch = stopwatch
        self._report = report
        self._limit = limit
        self._on_done = on_done
        self._start = first_step
        self._current: list[Pairs] = []
        self._pending: PendingMetrics | None = None
        self._in_flight: collections.deque[Pairs] = collections.deque()
        self.completed = first_step  # micro-steps seen complete
        self._stamps: dict[int, float] = {first_step: stopwatch.elapsed()}

    def restart_clock(self) -> None:
        """Times from now (after the compile); nothing may be in flight."""
        self._stopwatch.restart()
        self._stamps = {self.completed: 0.0}

    def add(self, step_metrics: Pairs) -> None:
        """Appends one dispatched step's device metrics to the open interval (no host sync)."""
        self._current.append(step_metrics)
        self._in_flight.append(step_metrics)

    def make_room(self) -> None:
        """Waits until fewer than ``limit`` steps are in flight, so one more may be queued."""
        while len(self._in_flight) >= self._limit:
            self._complete_oldest()

    def wait_until(self, done: int) -> None:
        """Waits until ``done`` micro-steps are complete (every step in flight when ``done`` is
        the last dispatched)."""
        while self.completed < done and self._in_flight:
            self._complete_oldest()

    def _complete_oldest(self) -> None:
        jax.block_until_ready(self._in_flight.popleft())
        self.completed += 1
        self._stamps[self.completed] = self._stopwatch.elapsed()
        self._on_done(1)

    def close(self, done: int) -> None:
        """Closes the open interval at ``done`` micro-steps: starts its host copy and reports the
        interval before it (whose copy has had a whole interval to finish).

        Raises:
          NonFiniteError: the reported interval holds a non-finite step.
        """
        closing = PendingMetrics(self._start, self._current, 0.0) if self._current else None
        self._start, self._current = done, []
        self._report_pending()
        self._pending = closing

    def settle(self) -> None:
        """Closes the open interval and reports everything (blocks): afterwards every step run so
        far is complete and known to be finite, so the state may be saved.

        Raises:
          NonFiniteError: some step since the last report was non-finite.
        """
        self.close(self._start + len(self._current))
        self._report_pending()
        self.wait_until(self._start)

    def _report_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        bad = pending.first_nonfinite()
        if bad is not None:
            raise NonFiniteError(bad[0] + 1, bad[1])
        end = pending.first_step + len(pending.steps)
        self.wait_until(end)
        pending.wall_time = self._seconds(pending.first_step, end)
        self._report(end, pending)

    def _seconds(self, first: int, end: int) -> float:
        """Running time from the completion of step ``first`` to that of step ``end``."""
        seconds = self._stamps[end] - self._stamps.get(first, self._stamps[end])
        self._stamps = {k: v for k, v in self._stamps.items() if k >= end}
        return seconds


__all__ = ["MetricIntervals", "NonFiniteError", "Stopwatch"]
