"""Two real processes (jax.distributed + gloo on localhost, 2 CPU devices each) read exactly the
global train batches of one process with 4 devices: the real pipeline, not a fake (issue 12.6).
Runtime ~25 s on 2 cores (two interpreters import JAX and TensorFlow)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

from cnn_flax.training import parallel
from tests.data import multiprocess_worker as worker

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_read_the_global_batches_of_one(digits_dir, tmp_path):
    out = tmp_path / "batches.npz"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "tests.data.multiprocess_worker"]
    procs = [
        subprocess.Popen(
            [*command, str(i), "2", str(port), digits_dir, str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        logs = [proc.communicate(timeout=300)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]

    sharding = parallel.data_sharding(parallel.create_mesh(jax.devices()[:4]))
    one = worker.global_batches(digits_dir, sharding, start_step=0, steps=worker.STEPS)
    with np.load(out) as two:
        np.testing.assert_array_equal(two["image"], one["image"])
        np.testing.assert_array_equal(two["label"], one["label"])
        np.testing.assert_array_equal(two["resumed_image"], one["image"][worker.RESUME_AT :])
        np.testing.assert_array_equal(two["resumed_label"], one["label"][worker.RESUME_AT :])
    # Not a trivially constant stream: the 20 examples and their two copies each are all there.
    assert len({image.tobytes() for image in one["image"].reshape(-1, 32 * 32 * 3)}) > 16
