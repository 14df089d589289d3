"""A run resumed with another batch size (``--config_change=allow``) keeps its length, its epoch
counter and its schedule in images, and records the change.

Before, the step arithmetic was redone for the new batch from the old step count: halving the
batch after 2 of 4 epochs trained 5.24 epochs of images while the log said 4, doubling it said
"already finished" after 2.6 epochs, and the learning rate jumped to another point of the
schedule.
"""

from __future__ import annotations

import json

import pytest

from cnn_flax.configs import get_config
from cnn_flax.training import optim, run_record, trainer
from cnn_flax.training.run_plan import Origin, make_run_plan
from tests.training import fakes


def _config(batch: int):
    # 2 epochs of the 64 fake examples: 8 updates of 16.
    return fakes.tiny_config(
        batch_size=batch,
        total_steps=None,
        num_epochs=2,
        log_every_steps=1,
        eval_every_steps=100,
        checkpoint_every_steps=100,
    )


@pytest.mark.parametrize("batch, steps_after", [(8, 8), (32, 2)])
def test_resume_with_another_batch_keeps_the_epochs(batch, steps_after, tmp_path, capsys):
    first = trainer.train(
        _config(16), tmp_path, data_source=fakes.FakeData(), show_progress=False, stop_after=4
    )
    assert first.step == 4  # one epoch of 64 images
    data = fakes.FakeData()
    resumed = trainer.train(
        _config(batch),
        tmp_path,
        data_source=data,
        show_progress=False,
        allow_config_change=True,
    )
    out = capsys.readouterr().out
    assert resumed.stopped is trainer.StopReason.FINISHED, out
    # The second epoch, 64 images, in updates of the new batch.
    assert resumed.step == 4 + steps_after
    assert data.start_examples == [64]
    history = [json.loads(line) for line in (tmp_path / run_record.HISTORY_FILE).open()]
    assert [(h["step"], h["config"]["batch_size"]) for h in history] == [(0, 16), (4, batch)]
    assert f"Config changed at step 4 (recorded in {tmp_path}" in out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    epochs = [r["epoch"] for r in records if r["split"] == "train"]
    assert epochs == sorted(epochs) and epochs[-1] == pytest.approx(2.0), epochs


@pytest.mark.parametrize("batch", [8, 64])
def test_schedule_is_the_same_function_of_images(batch):
    """At every point of the resumed run, the learning rate over its peak is the uninterrupted
    run's at the same epoch (counted in images; each batch size's epoch drops its own remainder
    of the 1437 images, so an epoch is 1408 images of 32 and 1432 of 8)."""
    config = get_config("quickstart")  # cosine with warm-up, lr scaled with the batch
    config.num_epochs = 4
    before = make_run_plan(config, num_train=1437)
    old = optim.create_learning_rate_schedule(config, before)
    peak_old = optim.peak_learning_rate(config, before)
    config.batch_size = batch
    origin = Origin(updates=50, images=50 * 32)
    after = make_run_plan(config, num_train=1437, origin=origin)
    new = optim.create_learning_rate_schedule(config, after)
    peak_new = optim.peak_learning_rate(config, after)
    # 4 epochs of whole batches (each batch size drops its own remainder of the 1437 images).
    end_images = 4 * after.steps_per_epoch * batch
    assert after.images(after.total_steps) == pytest.approx(end_images, abs=batch)
    assert after.epoch(after.total_steps) == pytest.approx(4.0, abs=0.03)
    for update in range(50, after.total_steps, 7):
        want = float(old(after.epoch(update) * before.steps_per_epoch)) / peak_old
        assert float(new(update)) / peak_new == pytest.approx(want, abs=1e-4), update
