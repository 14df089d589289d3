"""One run per workdir: a live lock refuses, a stale one (its process killed) is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cnn_flax.training import workdir_lock

# A process that takes the lock, says so, then waits to be killed.
# The module is loaded from its file, not through the package, to start in a fraction of a second.
_HOLDER = f"""
import importlib.util, pathlib, sys, time
spec = importlib.util.spec_from_file_location("workdir_lock", {workdir_lock.__file__!r})
workdir_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(workdir_lock)
held = workdir_lock.acquire(pathlib.Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """A live process that holds ``tmp_path``'s lock."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def test_a_live_run_holds_the_workdir(tmp_path, holder):
    with pytest.raises(
        workdir_lock.WorkdirError, match=f"in use by another run .process {holder.pid}"
    ):
        workdir_lock.acquire(tmp_path)


def test_a_killed_runs_lock_is_taken_over(tmp_path, holder, capsys):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = workdir_lock.acquire(tmp_path)
    assert f"stale lock of a run that is gone (process {holder.pid}" in capsys.readouterr().out
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_a_released_lock_leaves_no_stale_record(tmp_path, capsys):
    workdir_lock.acquire(tmp_path).release()
    with pytest.raises(workdir_lock.WorkdirError):
        held = workdir_lock.acquire(tmp_path)
        workdir_lock.acquire(tmp_path)  # a second run in this very process is refused too
    held.release()
    workdir_lock.acquire(tmp_path).release()
    assert "stale" not in capsys.readouterr().out


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(workdir_lock.WorkdirError, match="is a file, not a folder"):
        workdir_lock.prepare_workdir(tmp_path / "run")
    with pytest.raises(
        workdir_lock.WorkdirError, match="Cannot write to --workdir .*Not a directory"
    ):
        workdir_lock.prepare_workdir(tmp_path / "run" / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_workdir_is_refused(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(workdir_lock.WorkdirError, match="Permission denied"):
            workdir_lock.prepare_workdir(tmp_path)
    finally:
        tmp_path.chmod(0o755)
