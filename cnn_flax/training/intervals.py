"""The loop's logging intervals: per-step device metrics fetched one interval late, and a clock
that leaves evaluation and checkpoint time out of the images/s.

The train step returns ``(sum, count)`` device scalars. :class:`MetricIntervals` keeps those of
every step of an interval; when the interval closes it starts their device-to-host copies and
reports the interval before, whose copies are long done, so the hot loop never waits for the
device, yet every step's values are seen and a non-finite loss or state is pinned to its exact
step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

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
    """Groups the per-step metrics into intervals and reports each one an interval late.

    Args:
      first_step: micro-steps done before the first step added (the resume point).
      stopwatch: the loop's clock; an interval's wall time is its elapsed time.
      report: called with ``(micro-steps done at the interval's end, interval)`` once the
        interval's values are on the host and known to be finite.
    """

    def __init__(
        self,
        *,
        first_step: int,
        stopwatch: Stopwatch,
        report: Callable[[int, PendingMetrics], None],
    ):
        self._stopwatch = stopwatch
        self._report = report
        self._start = first_step
        self._current: list[Pairs] = []
        self._pending: PendingMetrics | None = None

    def add(self, step_metrics: Pairs) -> None:
        """Appends one step's device metrics to the open interval (no host sync)."""
        self._current.append(step_metrics)

    def close(self, done: int) -> None:
        """Closes the open interval at ``done`` micro-steps: starts its host copy and reports the
        interval before it (whose copy has had a whole interval to finish).

        Raises:
          NonFiniteError: the reported interval holds a non-finite step.
        """
        seconds = self._stopwatch.restart()
        closing = PendingMetrics(self._start, self._current, seconds) if self._current else None
        self._start, self._current = done, []
        self._report_pending()
        self._pending = closing

    def settle(self) -> None:
        """Closes the open interval and reports everything (blocks): afterwards every step run so
        far is known to be finite, so the state may be saved.

        Raises:
          NonFiniteError: some step since the last report was non-finite.
        """
        self.close(self._start + len(self._current))
        self._report_pending()

    def _report_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        bad = pending.first_nonfinite()
        if bad is not None:
            raise NonFiniteError(bad[0] + 1, bad[1])
        self._report(pending.first_step + len(pending.steps), pending)


__all__ = ["MetricIntervals", "NonFiniteError", "Stopwatch"]
