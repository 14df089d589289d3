"""Metrics without host syncs: (sum, count) pairs, asynchronous fetches, writers, progress bar.

The train step returns each metric as a ``(sum, count)`` pair of device scalars. The loop keeps the
pairs of every step of a logging interval, starts their device-to-host copies when the interval
ends, and reads them one interval later, by when the copies are long done. So the hot loop never
blocks on the device (no ``float(loss)``), yet every step's values are seen: a non-finite loss is
caught at the next log and pinned to its exact step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

from cnn_flax.training.steps import NONFINITE

Pairs = Mapping[str, tuple[Any, Any]]


def is_flag(name: str) -> bool:
    """Whether metric ``name`` is a non-finite flag rather than a value to log."""
    return name == NONFINITE or name.startswith(NONFINITE + "_")


def reduce_pairs(steps: Iterable[Pairs]) -> dict[str, float]:
    """Sums the pairs of several steps and divides: ``{name: sum / count}`` (host values)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for pairs in steps:
        for name, (s, c) in pairs.items():
            sums[name] = sums.get(name, 0.0) + float(np.asarray(s))
            counts[name] = counts.get(name, 0.0) + float(np.asarray(c))
    return {name: sums[name] / counts[name] if counts[name] else math.nan for name in sums}


class PendingMetrics:
    """The device metrics of one logging interval, on their way to the host.

    Attributes:
      first_step: optimizer step (0-based) of the first entry.
      steps: per-step ``{name: (sum, count)}`` device scalars.
      wall_time: seconds from the completion of the step before the interval to that of its
        last step (results seen ready, not steps dispatched), pauses left out.
    """

    def __init__(self, first_step: int, steps: list[Pairs], wall_time: float):
        self.first_step = first_step
        self.steps = steps
        self.wall_time = wall_time
        for pairs in steps:
            for leaf in jax.tree.leaves(pairs):
                leaf.copy_to_host_async()

    def first_nonfinite(self) -> tuple[int, list[str]] | None:
        """``(step, flag names)`` of the interval's first step with a non-finite flag set (the
        loss or gradient, or a part of the state), or ``None`` (blocks)."""
        for i, pairs in enumerate(self.steps):
            bad = [name for name in pairs if is_flag(name) and float(np.asarray(pairs[name][0]))]
            if bad:
                return self.first_step + i, bad
        return None

    def result(self) -> dict[str, float]:
        """Interval means of every metric (blocks until the copies are done)."""
        return reduce_pairs(self.steps)


class MetricWriter:
    """Writes scalars to ``workdir/metrics.jsonl`` and TensorBoard event files.

    Only process 0 writes (``enabled=False`` elsewhere). TensorFlow is imported on first use, so
    importing this module stays cheap.
    """

    def __init__(
        self, workdir: str | pathlib.Path, *, enabled: bool = True, tensorboard: bool = True
    ):
        self.workdir = pathlib.Path(workdir)
        self.enabled = enabled
        self._tensorboard = tensorboard
        self._tb_writer = None
        self._jsonl = None
        if enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = (self.workdir / "metrics.jsonl").open("a")

    def _tb(self):
        if self._tb_writer is None and self._tensorboard:
            import tensorflow as tf

            # TensorFlow must never claim the accelerators JAX is using.
            tf.config.set_visible_devices([], "GPU")
            self._tb_writer = tf.summary.create_file_writer(str(self.workdir / "tensorboard"))
        return self._tb_writer

    def write(self, step: int, scalars: Mapping[str, float], *, prefix: str) -> None:
        """One jsonl record ``{"step", "split", name: value, ...}`` and one TB scalar per name."""
        if not self.enabled:
            return
        record = {"step": int(step), "split": prefix, "time": time.time()}
        record.update({k: _jsonable(v) for k, v in scalars.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        writer = self._tb()
        if writer is not None:
            import tensorflow as tf

            with writer.as_default(step=int(step)):
                for name, value in scalars.items():
                    # tf.summary.scalar needs the tensorboard package; writing the tensor with
                    # the scalars plugin's metadata is the same event without it.
                    tf.summary.write(
                        f"{prefix}/{name}",
                        tf.constant(float(value), tf.float32),
                        metadata=_scalar_metadata(),
                    )
            writer.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb_writer is not None:
            self._tb_writer.close()
            self._tb_writer = None


def _scalar_metadata() -> bytes:
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    return metadata.SerializeToString()


def _jsonable(value: float) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else str(value)


class ProgressBar:
    """A tqdm bar over steps showing loss, images/s, step time and MFU (process 0).

    The bar appears after the first step: that step carries the compilation, and a rate or ETA
    that counted it would be wrong for minutes. Messages before then are printed as lines.
    """

    def __init__(self, *, total: int, initial: int, enabled: bool = True):
        self._total = total
        self._n = initial
        self._enabled = enabled
        self._bar = None

    def update(self, n: int = 1) -> None:
        self._n += n
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self._total, initial=self._n, unit="step", dynamic_ncols=True)
        else:
            self._bar.update(n)

    def show(self, scalars: Mapping[str, float]) -> None:
        if self._bar is None:
            return
        shown = {}
        if "loss" in scalars:
            shown["loss"] = f"{scalars['loss']:.4f}"
        if "img_per_s" in scalars:
            shown["img/s"] = f"{scalars['img_per_s']:.0f}"
        if "step_time_ms" in scalars:
            shown["step"] = f"{scalars['step_time_ms']:.0f}ms"
        if "mfu" in scalars:
            shown["mfu"] = f"{100 * scalars['mfu']:.1f}%"
        elif "gflops_per_s" in scalars:
            shown["GFLOP/s"] = f"{scalars['gflops_per_s']:.1f}"
        self._bar.set_postfix(shown, refresh=False)

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# --- throughput and model FLOPs utilisation -------------------------------------------------------


def step_flops_per_device(lowered: Any, fn: Callable, *args: Any, num_devices: int) -> float | None:
    """FLOPs one device executes per step, for MFU: the lowered (global, not yet partitioned)
    program's count divided among the devices (:func:`cnn_flax.perf.flops.lowered_or_jaxpr_flops`).

    The compiled program's count is not used: on GPU it leaves out the cuDNN convolutions.
    """
    from cnn_flax.perf.flops import lowered_or_jaxpr_flops

    try:
        flops = lowered_or_jaxpr_flops(lowered, fn, *args)
    except Exception:  # noqa: BLE001 - a count is a nicety, never a reason to stop training
        return None
    return flops / num_devices if flops > 0 else None


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Images/s, step time and MFU of a run's logging intervals.

    MFU uses the one peak table (:mod:`cnn_flax.perf.peaks`) in the run's compute dtype and the
    benchmark's formula (:func:`cnn_flax.perf.rates.mfu`), so the trainer and the benchmark report
    the same MFU for the same FLOPs, time, device and dtype.

    Attributes:
      global_batch: examples per step over all devices.
      num_devices: devices of the mesh.
      flops_per_device_step: FLOPs one device runs per step, or ``None`` when not counted.
      peak_per_device: dense peak FLOP/s of one device in the run's dtype, or ``None``.
    """

    global_batch: int
    num_devices: int
    flops_per_device_step: float | None
    peak_per_device: float | None

    @classmethod
    def for_run(
        cls,
        *,
        device_kind: str,
        dtype: str,
        global_batch: int,
        num_devices: int,
        flops_per_device_step: float | None,
    ) -> Throughput:
        """The meter of a run on ``num_devices`` of ``device_kind``, computing in ``dtype``."""
        from cnn_flax.perf import peaks

        return cls(
            global_batch=global_batch,
            num_devices=num_devices,
            flops_per_device_step=flops_per_device_step,
            peak_per_device=peaks.peak_flops(device_kind, dtype),
        )

    def scalars(self, *, steps: int, seconds: float) -> dict[str, float]:
        """``img_per_s``, ``step_time_ms`` and, when FLOPs are counted, ``gflops_per_s`` and
        ``mfu`` (only where the peak is known) of ``steps`` steps that took ``seconds``."""
        from cnn_flax.perf import rates

        if steps <= 0 or seconds <= 0:
            return {}
        step_s = seconds / steps
        out = {
            "img_per_s": rates.images_per_second(self.global_batch, step_s),
            "step_time_ms": 1000.0 * step_s,
        }
        if self.flops_per_device_step:
            per_device = rates.achieved_flops_per_second(self.flops_per_device_step, step_s)
            out["gflops_per_s"] = per_device * self.num_devices / 1e9
            mfu = rates.mfu(self.flops_per_device_step, step_s, self.peak_per_device)
            if mfu is not None:
                out["mfu"] = mfu
        return out
