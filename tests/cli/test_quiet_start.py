"""The commands print no TensorFlow C++ start-up noise, and a user's own log settings win.

TensorFlow's native libraries log through absl before anyone initialises it: ``WARNING: All log
messages before absl::InitializeLog() is called are written to STDERR``, a oneDNN ``I0000 ...
port.cc`` line (twice) and a CPU-instructions note, on every command that reads data. The test
environment sets ``TF_CPP_MIN_LOG_LEVEL`` (tests/conftest.py), so each subprocess here starts
from a user's environment without it. Runtime: ~20 s on 2 cores (one TensorFlow import).
"""

from __future__ import annotations

import os
import subprocess
import sys

NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")
SETTINGS = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")


def _user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return env | extra


def test_a_data_command_prints_no_tensorflow_native_logs(tmp_path):
    """``python -m cnn_flax.data.prepare digits`` imports TensorFlow and tfds, as train,
    evaluate and predict do on digits or a folder, and builds the set."""
    done = subprocess.run(
        [sys.executable, "-m", "cnn_flax.data.prepare", "digits/16"],
        env=_user_env(TFDS_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "digits/16: prepared" in done.stdout
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noise, "\n".join(noise)


def test_the_users_own_settings_are_kept():
    """``import cnn_flax`` fills the two settings only where the user left them unset."""
    code = f"import os, cnn_flax; print(*(os.environ[k] for k in {SETTINGS!r}))"
    mine = subprocess.run(
        [sys.executable, "-c", code],
        env=_user_env(TF_CPP_MIN_LOG_LEVEL="0", TF_ENABLE_ONEDNN_OPTS="1"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert mine.stdout.split() == ["0", "1"]
    default = subprocess.run(
        [sys.executable, "-c", code], env=_user_env(), capture_output=True, text=True, check=True
    )
    assert default.stdout.split() == ["1", "0"]
