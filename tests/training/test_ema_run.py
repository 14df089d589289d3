"""torchvision's EMA through the real loop: the trainer builds the plan's state, checkpoints the
averaged statistics and evaluates the EMA weights with them (the unit twin: tests/test_ema.py)."""

from __future__ import annotations

import contextlib
import io

import chex
import jax
import numpy as np

from cnn_flax.training import checkpoint, trainer
from tests.training import fakes


def test_a_run_averages_and_saves_the_batchnorm_statistics(tmp_path):
    config = fakes.tiny_config(
        ema_decay=0.5,
        ema_every_steps=2,
        ema_copy_in_warmup=True,
        ema_batch_stats=True,
        **{"schedule.warmup_epochs": 0.0},
    )
    with contextlib.redirect_stdout(io.StringIO()):
        result = trainer.train(config, tmp_path, data_source=fakes.FakeData(), show_progress=False)
    state = jax.device_get(result.state)
    assert state.ema_batch_stats is not None
    # Averaged, so neither the raw statistics nor a copy of them.
    raw, ema = state.batch_stats["bn0"]["mean"], state.ema_batch_stats["bn0"]["mean"]
    assert not np.allclose(raw, ema)
    assert "eval_ema_top1" in result.eval_metrics
    saved = checkpoint.load_variables(tmp_path, ema=True)
    chex.assert_trees_all_equal(saved["batch_stats"], state.ema_batch_stats)
    chex.assert_trees_all_equal(saved["params"], state.ema_params)
