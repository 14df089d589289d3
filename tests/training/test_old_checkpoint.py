"""A workdir written before the package was reorganised (issue 19) still restores.

``old_workdir/`` was written by the code of commit be5f583 (before the move into cli/, training/
...) with::

    python -m cnn_flax.train --config=quickstart --workdir=W --config.model_overrides.base_width=2 \
        --config.total_steps=3 --config.eval_every_steps=3 --config.schedule.warmup_epochs=0

and ``old_workdir_logits.npy`` holds what that code's model gave on the images of
:func:`_images`. Config keys, the checkpoint layout and parameter names must keep reading it.
"""

from __future__ import annotations

import pathlib
import shutil

import numpy as np

from cnn_flax.training import checkpoint
from cnn_flax.training.config_checks import load_config
from cnn_flax.training.model_builder import build_model

OLD = pathlib.Path(__file__).parent / "old_workdir"


def _images() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)


def test_old_checkpoint_gives_the_old_logits():
    config = load_config(None, workdir=OLD)
    model = build_model(config, num_classes=10, num_devices=1)
    variables = checkpoint.load_variables(OLD)
    logits = np.asarray(model.apply(variables, _images(), train=False))
    np.testing.assert_allclose(logits, np.load(OLD.parent / "old_workdir_logits.npy"), atol=1e-5)


def test_old_workdir_resumes(tmp_path):
    from cnn_flax.training import trainer

    workdir = tmp_path / "run"
    shutil.copytree(OLD, workdir)
    config = load_config(None, workdir=workdir)
    config.total_steps = 4
    config.eval_every_steps = 4
    # A longer run of the same workdir: it restores step 3 (state, optimiser, step) and goes on.
    result = trainer.train(config, workdir, show_progress=False, allow_config_change=True)
    assert result.step == 4
    assert (workdir / "checkpoints" / "4").is_dir()
    assert "total_steps" in (workdir / "config_history.jsonl").read_text()
