"""Two processes on localhost (jax.distributed + gloo) train exactly like one process."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from cnn_flax.training import trainer
from tests.training import fakes

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    port = _free_port()
    out = tmp_path / "params.npz"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.training.multiprocess_worker",
                str(i),
                "2",
                str(port),
                str(tmp_path / "two"),
                str(out),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]

    # The same global batch on a 4-device mesh in this process.
    single = trainer.train(
        fakes.multiprocess_config(),
        tmp_path / "one",
        data_source=fakes.FakeData(),
        devices=jax.devices()[:4],
        show_progress=False,
    )
    expected = jax.tree.leaves(fakes.params_of(single.state))
    with np.load(out) as saved:
        got = [saved[f"arr_{i}"] for i in range(len(expected))]
        assert float(saved["top1"]) == single.eval_metrics["eval_top1"]
    chex.assert_trees_all_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (tmp_path / "two" / "checkpoints" / "3").is_dir()
