"""The arithmetic of a benchmark: step time, images per second, achieved FLOP/s and MFU.

Pure functions on plain numbers, so they can be checked by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

# A training step is counted as three forward passes: the backward pass computes a gradient for
# the activations and one for the weights, each costing about one forward (Kaplan et al. 2020,
# "Scaling Laws for Neural Language Models", section 2.1). Model FLOPs ignore rematerialisation.
TRAIN_FLOPS_PER_FORWARD = 3.0


def step_time(window_seconds: Sequence[float], steps_per_window: int) -> float:
    """Median, over timing windows, of the mean step time in each window (seconds).

    Each window runs ``steps_per_window`` steps back to back with a single device sync at its end,
    so there is no host sync between steps; the median over windows discards a slow outlier.

    Raises:
      ValueError: when there are no windows or ``steps_per_window`` is not positive.
    """
    if not window_seconds or steps_per_window <= 0:
        raise ValueError(
            f"Need at least one timing window and steps_per_window > 0, got "
            f"{len(window_seconds)} windows of {steps_per_window} steps."
        )
    return statistics.median(t / steps_per_window for t in window_seconds)


def images_per_second(batch_size: int, seconds_per_step: float) -> float:
    """Throughput in images per second."""
    return batch_size / seconds_per_step


def model_flops_per_step(forward_flops_per_image: float, *, batch_size: int, mode: str) -> float:
    """FLOPs the model needs for one step: one forward per image, or three for training.

    Raises:
      ValueError: for a mode other than "train" or "infer".
    """
    if mode not in ("train", "infer"):
        raise ValueError(f"Unknown mode {mode!r}; use 'train' or 'infer'.")
    factor = TRAIN_FLOPS_PER_FORWARD if mode == "train" else 1.0
    return factor * forward_flops_per_image * batch_size


def achieved_flops_per_second(flops_per_step: float, seconds_per_step: float) -> float:
    """Model FLOPs per second actually delivered."""
    return flops_per_step / seconds_per_step


def mfu(flops_per_step: float, seconds_per_step: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1]; ``None`` when the device peak is unknown."""
    if peak is None:
        return None
    return achieved_flops_per_second(flops_per_step, seconds_per_step) / peak
