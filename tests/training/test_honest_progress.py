"""The run tells the truth about a slow step: images/s, step time and the progress bar count
steps the device has completed, not steps queued; a stop signal acts within a step or two.

The slow model (:class:`tests.training.fakes.SlowCNN`) spends a few hundred milliseconds of
device time per step while its dispatch returns in microseconds, as a big model on a small
machine does; before the loop bounded the steps in flight, it logged the dispatch rate (a
fine-tune on 2 cores logged 521 img/s while computing 0.3 img/s) and a SIGTERM waited for every
queued step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import pytest

from cnn_flax.training import metrics, trainer
from tests.training import fakes


def _real_step_seconds() -> float:
    """Device seconds of the slow model's extra work alone (a lower bound of its step)."""
    model = fakes.SlowCNN()
    work = jax.jit(lambda x: fakes.heavy_work(x, size=model.size, repeats=model.repeats))
    x = jnp.ones((16, fakes.SIZE, fakes.SIZE, 3))
    work(x).block_until_ready()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        work(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return sorted(times)[1]


def test_logged_rate_and_bar_follow_completed_steps(tmp_path, monkeypatch):
    updates: list[float] = []
    update = metrics.ProgressBar.update

    def timed_update(self, n=1):
        updates.extend([time.perf_counter()] * n)
        update(self, n)

    monkeypatch.setattr(metrics.ProgressBar, "update", timed_update)
    config = fakes.tiny_config(
        model=fakes.SLOW_MODEL,
        total_steps=8,
        log_every_steps=4,
        eval_every_steps=100,
        checkpoint_every_steps=0,
    )
    result = trainer.train(
        config,
        tmp_path,
        data_source=fakes.FakeData(ready=8),
        devices=jax.devices()[:1],
        show_progress=False,
    )
    real = _real_step_seconds()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step_time_ms"] / 1000 for r in records if r["split"] == "train"]
    assert logged and min(logged) > 0.5 * real, (logged, real)
    # The bar moved as steps completed: eight updates spread over about eight steps' time.
    assert len(updates) == 8
    assert updates[-1] - updates[0] > 0.5 * 7 * real, (updates[-1] - updates[0], real)
    assert result.stopped is trainer.StopReason.FINISHED


_WORKER = textwrap.dedent(
    """
    import sys
    import jax
    import tensorflow  # noqa: F401 - as the real input pipeline has (the metrics writer uses it)
    from cnn_flax.training import trainer
    from tests.training import fakes

    fakes.register_tiny_model()
    config = fakes.tiny_config(
        model=fakes.SLOW_MODEL, total_steps=200, log_every_steps=100, eval_every_steps=1000,
        checkpoint_every_steps=0,
    )

    def say(step):
        print(f"fetching {step}", flush=True)

    result = trainer.train(
        config, sys.argv[1], data_source=fakes.FakeData(on_step=say, ready=200),
        devices=jax.devices()[:1], show_progress=False,
    )
    print(f"result {result.stopped} {result.step}", flush=True)
    sys.exit(128 + result.signal if result.signal else 0)
    """
)


def test_sigterm_stops_within_a_few_steps(tmp_path):
    """A real SIGTERM to a training process: it stops queuing steps at once, finishes the ones in
    flight, saves and exits long before the 200 steps it had left."""
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(tmp_path / "w")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("fetching 5"):
                break
        else:
            pytest.fail("\n".join(lines))
        sent = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
        seconds = time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += rest.splitlines()
    out = "\n".join(lines)
    print(f"SIGTERM to exit: {seconds:.1f} s")
    assert proc.returncode == 128 + signal.SIGTERM, out
    stopped = next(line for line in lines if line.startswith("Stopped at step"))
    step = int(stopped.split()[3])
    assert 4 <= step <= 8, out  # the steps queued when the signal came, no more
    assert (tmp_path / "w" / "checkpoints" / str(step)).is_dir(), out
    # The 195 steps left take about a minute; stopping takes a step or two and the save.
    assert seconds < 15, (seconds, out)
