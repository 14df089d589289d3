"""Timing windows with a single device sync at the end of each."""

from __future__ import annotations

import time
from collections.abc import Callable


def time_windows(
    run_steps: Callable[[int], None], *, steps: int, windows: int, warmup: int
) -> list[float]:
    """Wall-clock seconds of ``windows`` windows that together run ``steps`` steps.

    Args:
      run_steps: ``run_steps(n)`` dispatches ``n`` steps back to back and then waits for the
        device once (``block_until_ready`` / ``cuda.synchronize``): the only host sync.
      steps: total timed steps; must be a positive multiple of ``windows``.
      windows: number of timing windows (the benchmark reports the median window).
      warmup: untimed steps run first (compilation, autotuning, allocator warm-up).

    Raises:
      ValueError: if ``steps`` is not a positive multiple of ``windows``.
    """
    if windows <= 0 or steps <= 0 or steps % windows:
        raise ValueError(
            f"--steps={steps} must be a positive multiple of --windows={windows} "
            f"(e.g. --steps={max(windows, 1) * max(1, -(-steps // max(windows, 1)))})."
        )
    if warmup:
        run_steps(warmup)
    per_window = steps // windows
    seconds = []
    for _ in range(windows):
        start = time.perf_counter()
        run_steps(per_window)
        seconds.append(time.perf_counter() - start)
    return seconds
