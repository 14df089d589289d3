"""A checkpoint that cannot be written (a full disk, a file-size limit) is one line, and the
failed step is not left behind as a complete checkpoint."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest

from cnn_flax.training import checkpoint
from tests.helpers import file_size_limit


def test_a_failed_write_is_one_line_and_leaves_no_checkpoint(tmp_path, caplog):
    checkpoint.silence_background_write_errors()
    manager = checkpoint.CheckpointManager(tmp_path, keep=2, keep_best=False)
    state = {"w": np.random.default_rng(0).random((256, 1024), np.float32)}  # 1 MiB, incompressible
    with (
        caplog.at_level(logging.ERROR),
        pytest.raises(checkpoint.CheckpointError) as caught,
        file_size_limit(64 * 1024),
    ):
        manager.save(1, state)
        manager.wait()
    with contextlib.suppress(checkpoint.CheckpointError):
        manager.close()
    message = str(caught.value)
    assert "\n" not in message and len(message) < 500, message
    assert message.startswith(f"Cannot write a checkpoint in {tmp_path / 'checkpoints'}: ")
    assert "rerun the same command" in message
    assert not [r for r in caplog.records if "orbax" in r.pathname], "Orbax's thread logs kept"
    assert checkpoint.training_step_dir(tmp_path) is None


def test_a_failed_variables_write_leaves_nothing_that_blocks_the_rerun(tmp_path):
    variables = {"params": {"w": np.random.default_rng(0).random((256, 1024), np.float32)}}
    meta = {"model": "resnet18", "num_classes": 1000}
    out = tmp_path / "out"
    error = pytest.raises(checkpoint.CheckpointError, match="Cannot write checkpoint .*rerun")
    with error, file_size_limit(64 * 1024):
        checkpoint.save_variables(out, variables, meta=meta)
    assert list(tmp_path.iterdir()) == []  # neither --out nor a partial folder beside it
    checkpoint.save_variables(out, variables, meta=meta)
    assert checkpoint.is_variables_checkpoint(out)
