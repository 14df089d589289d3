"""One run per workdir: the workdir is checked to be a writable folder, then locked.

Two runs on one workdir would overwrite each other's checkpoints and interleave their
``metrics.jsonl``. So a run holds an exclusive ``flock`` on ``WORKDIR/.lock`` while it trains,
and writes its process id and host into the file. The kernel drops the lock when the process
dies, however it dies (SIGKILL, a crash, a lost node), so a lock file left behind by a killed
run is recognised as stale (its lock is free) and taken over, with a line saying so; a clean
exit empties the file. Only process 0 of a multi-process run takes the lock.

``flock`` is advisory and per open file: it protects against other cnn_flax runs, on one host or
on a shared file system that supports it (NFS v4, Lustre and GPFS do).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import socket
import time
from typing import IO

LOCK_FILE = ".lock"


class WorkdirError(ValueError):
    """The workdir cannot be used: not a folder, not writable, or in use by another run."""


def prepare_workdir(workdir: pathlib.Path) -> None:
    """Creates ``workdir`` and checks that files can be written in it (before any long work).

    Raises:
      WorkdirError: naming the path when it is a file, or cannot be created or written.
    """
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"--workdir {workdir} is a file, not a folder; pass a folder path.")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise WorkdirError(
            f"Cannot write to --workdir {workdir} ({os_reason(err)}); pass a writable folder."
        ) from None


def os_reason(err: OSError) -> str:
    """``err`` in a few words, e.g. "Permission denied" or "No space left on device"."""
    return err.strerror or (errno.errorcode.get(err.errno or 0) or type(err).__name__)


class WorkdirLock:
    """The lock of one workdir, held from :func:`acquire` until :meth:`release`."""

    def __init__(self, file: IO[str] | None, path: pathlib.Path):
        self._file = file
        self.path = path

    def release(self) -> None:
        """Empties the lock file (a clean exit leaves no stale record) and drops the lock."""
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def acquire(workdir: pathlib.Path, *, enabled: bool = True) -> WorkdirLock:
    """Takes ``workdir``'s lock (a no-op lock when not ``enabled``).

    Returns:
      The held :class:`WorkdirLock`; a line is printed when a stale lock was taken over.

    Raises:
      WorkdirError: another live process holds the lock (its pid, host and start time named).
    """
    path = workdir / LOCK_FILE
    if not enabled:
        return WorkdirLock(None, path)
    try:
        file = open(path, "a+")  # noqa: SIM115 (held open for as long as the run)
    except OSError as err:
        raise WorkdirError(f"Cannot create the lock {path} ({os_reason(err)}).") from None
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _describe(_read(file))
        file.close()
        raise WorkdirError(
            f"--workdir {workdir} is in use by another run ({holder}); wait for it to finish, "
            "stop it, or pass another --workdir."
        ) from None
    previous = _read(file)
    if previous:
        print(f"Taking over the stale lock of a run that is gone ({_describe(previous)}).")
    file.seek(0)
    file.truncate()
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
    file.write(json.dumps(record) + "\n")
    file.flush()
    return WorkdirLock(file, path)


def _read(file: IO[str]) -> dict:
    file.seek(0)
    try:
        return json.loads(file.read() or "{}")
    except json.JSONDecodeError:
        return {"pid": "?"}


def _describe(record: dict) -> str:
    if not record:
        return "process unknown"
    return (
        f"process {record.get('pid', '?')} on {record.get('host', '?')}, "
        f"started {record.get('started', '?')}"
    )


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
