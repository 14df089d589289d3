"""The weight EMA as torchvision's recipe runs it: every N iterations of each epoch, the decay
adjusted to the batch, cadence and run length, the average reset to the weights through the
learning-rate warm-up, BatchNorm statistics averaged too.

References are torchvision's own code: a transcription of references/classification/train.py
(the decay adjustment and the update / reset lines of ``train_one_epoch``) driving torch's
``AveragedModel`` with torchvision's ``ExponentialMovingAverage`` averaging function
(``use_buffers=True``), and the train step itself as the twin on the real path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.configs import base
from cnn_flax.training import optim, steps
from cnn_flax.training.run_plan import EmaPlan, make_run_plan, torchvision_ema_decay
from cnn_flax.training.state import create_train_state
from tests.training import fakes


def _torchvision_decay(*, world_size, batch_size, model_ema_steps, epochs, model_ema_decay):
    """references/classification/train.py, transcribed line by line."""
    adjust = world_size * batch_size * model_ema_steps / epochs
    alpha = 1.0 - model_ema_decay
    alpha = min(1.0, alpha * adjust)
    return 1.0 - alpha


@pytest.mark.parametrize(
    ("world_size", "batch_size", "ema_steps", "epochs", "decay"),
    [
        (8, 128, 32, 600, 0.99998),  # ResNet-50 V2
        (8, 512, 32, 300, 0.99998),  # ViT-B/16
        (1, 32, 1, 90, 0.999),
        (8, 128, 32, 1, 0.9),  # alpha clipped to 1: the "average" is the weights
    ],
)
def test_adjusted_decay_is_torchvisions(world_size, batch_size, ema_steps, epochs, decay):
    ours = torchvision_ema_decay(
        decay, global_batch=world_size * batch_size, every=ema_steps, num_epochs=epochs
    )
    theirs = _torchvision_decay(
        world_size=world_size,
        batch_size=batch_size,
        model_ema_steps=ema_steps,
        epochs=epochs,
        model_ema_decay=decay,
    )
    assert ours == theirs


def test_the_config_fields_reach_the_plan():
    config = base.get_base_config()
    config.batch_size, config.num_epochs, config.ema_decay = 1024, 600.0, 0.99998
    config.ema_every_steps, config.ema_adjust = 32, True
    config.schedule.warmup_epochs = 5.0
    config.ema_copy_in_warmup = True
    plan = make_run_plan(config, num_train=1_281_167).ema
    assert plan.decay == pytest.approx(1 - 2e-5 * 1024 * 32 / 600, abs=1e-12)  # 0.998908
    # 1251 updates per epoch: the warm-up ends at update 6255 = 5 x 1251, an epoch start, so
    # the first EMA update after it is that one.
    assert (plan.every, plan.steps_per_epoch, plan.copy_through) == (32, 1251, 6255)
    config.ema_copy_in_warmup = False
    assert make_run_plan(config, num_train=1_281_167).ema.copy_through == -1
    config.ema_decay = None
    assert make_run_plan(config, num_train=1_281_167).ema is None


def _torchvision_run(values, *, epochs, iters, ema_steps, warmup_epochs, decay):
    """torchvision's EMA over a run whose weights after iteration (epoch, i) are values[k].

    ``utils.ExponentialMovingAverage`` is ``AveragedModel(model, avg_fn=decay * avg + (1 -
    decay) * param, use_buffers=True)``; ``train_one_epoch`` calls ``update_parameters`` when
    ``i % model_ema_steps == 0`` and, during the warm-up epochs, then resets ``n_averaged``.
    """
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import AveragedModel

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))

    def ema_avg(avg_model_param, model_param, num_averaged):
        return decay * avg_model_param + (1 - decay) * model_param

    ema = AveragedModel(model, avg_fn=ema_avg, use_buffers=True)
    k = 0
    for epoch in range(epochs):
        for i in range(iters):
            with torch.no_grad():  # the optimiser step: the weights become values[k]
                model[0].weight.copy_(torch.from_numpy(values["kernel"][k].T))
                model[0].bias.copy_(torch.from_numpy(values["bias"][k]))
                model[1].running_mean.copy_(torch.from_numpy(values["mean"][k]))
                model[1].running_var.copy_(torch.from_numpy(values["var"][k]))
            k += 1
            if i % ema_steps == 0:
                ema.update_parameters(model)
                if epoch < warmup_epochs:
                    ema.n_averaged.fill_(0)
    avg = ema.module
    return {
        "kernel": avg[0].weight.detach().numpy().T,
        "bias": avg[0].bias.detach().numpy(),
        "mean": avg[1].running_mean.numpy(),
        "var": avg[1].running_var.numpy(),
    }


@pytest.mark.parametrize(("warmup_epochs", "every"), [(2, 3), (0, 4), (1, 1)])
def test_ema_step_follows_torchvisions_averaged_model(warmup_epochs, every):
    epochs, iters = 5, 10  # 10 iterations per epoch: updates at i = 0, 3, 6, 9 for every=3
    config = base.get_base_config()
    config.batch_size, config.num_epochs = 4, float(epochs)
    config.ema_decay, config.ema_every_steps, config.ema_adjust = 0.995, every, True
    config.ema_copy_in_warmup, config.ema_batch_stats = True, True
    config.schedule.warmup_epochs = float(warmup_epochs)
    plan = make_run_plan(config, num_train=iters * config.batch_size).ema
    rng = np.random.default_rng(0)
    n = epochs * iters
    values = {
        "kernel": rng.normal(size=(n, 3, 2)).astype(np.float32),
        "bias": rng.normal(size=(n, 2)).astype(np.float32),
        "mean": rng.normal(size=(n, 2)).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, size=(n, 2)).astype(np.float32),
    }

    def body(ema, u_and_new):
        u, new = u_and_new
        return optim.ema_step(ema, new, u, plan), None

    init = jax.tree.map(lambda v: jnp.zeros_like(v[0]), values)  # replaced by the first copy
    ours, _ = jax.jit(lambda e, xs: jax.lax.scan(body, e, xs))(init, (jnp.arange(n), values))
    theirs = _torchvision_run(
        values,
        epochs=epochs,
        iters=iters,
        ema_steps=every,
        warmup_epochs=warmup_epochs,
        decay=plan.decay,
    )
    for key in values:
        np.testing.assert_allclose(np.asarray(ours[key]), theirs[key], rtol=1e-6, atol=1e-6)
    # The average is not simply the last weights (the comparison would be vacuous).
    assert not np.allclose(theirs["kernel"], values["kernel"][-1], atol=1e-3)


def _train(config, *, micro_steps: int):
    """Runs the real train step; returns the states after each micro-step."""
    model = fakes.TinyCNN(dropout_rate=0.0)
    plan = make_run_plan(config, num_train=fakes.NUM_TRAIN)
    tx = optim.create_optimizer(config, plan)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
    state = create_train_state(variables, tx, use_ema=True, ema_batch_stats=True)
    step = jax.jit(
        steps.make_train_step(
            model,
            tx,
            config=config,
            num_classes=fakes.NUM_CLASSES,
            grad_accum_steps=plan.grad_accum_steps,
            ema=plan.ema,
        )
    )
    micro = config.batch_size // plan.grad_accum_steps
    states = []
    for i in range(micro_steps):
        batch = fakes.train_batch(i, global_batch_size=micro, seed=0)
        state, _ = step(state, jax.tree.map(jnp.asarray, batch))
        states.append(jax.device_get(state))
    return plan, states


@pytest.mark.parametrize("accum", [1, 2])
def test_train_step_advances_the_ema_by_its_plan(accum):
    # 64 examples / batch 16 = 4 updates per epoch; EMA after updates 0 and 2 of each epoch;
    # warm-up 1 epoch: copies at updates 0, 2 and 4 (the first after the warm-up), then averages.
    config = fakes.tiny_config(
        ema_decay=0.5,
        ema_every_steps=2,
        ema_copy_in_warmup=True,
        ema_batch_stats=True,
        grad_accum_steps=accum,
        total_steps=None,
        num_epochs=2.0,
        **{"schedule.warmup_epochs": 1.0},
    )
    plan, states = _train(config, micro_steps=8 * accum)
    assert plan.ema == EmaPlan(
        decay=0.5, every=2, steps_per_epoch=4, copy_through=4, batch_stats=True
    )
    after = [states[(u + 1) * accum - 1] for u in range(8)]  # the state after each update
    for u, state in enumerate(after):
        raw = {"params": state.params, "stats": state.batch_stats}
        ema = {"params": state.ema_params, "stats": state.ema_batch_stats}
        before = after[u - 1] if u else None
        if u in (0, 2, 4):  # copies
            jax.tree.map(np.testing.assert_array_equal, ema, raw)
        elif u in (1, 3, 5, 7):  # not due: unchanged
            prev = {"params": before.ema_params, "stats": before.ema_batch_stats}
            jax.tree.map(np.testing.assert_array_equal, ema, prev)
        else:  # u = 6: 0.5 x the previous average + 0.5 x the weights
            prev = {"params": before.ema_params, "stats": before.ema_batch_stats}
            want = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, prev, raw)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ema, want)
    # The statistics move (else their average would be checked against nothing).
    assert not np.allclose(after[6].batch_stats["bn0"]["mean"], after[5].batch_stats["bn0"]["mean"])
    # Evaluation of the EMA uses the averaged statistics.
    assert after[6].variables(ema=True)["batch_stats"] is after[6].ema_batch_stats


def test_a_state_with_ema_weights_needs_a_plan():
    config = fakes.tiny_config(ema_decay=0.9)
    model = fakes.TinyCNN()
    tx = optim.create_optimizer(config, make_run_plan(config, num_train=fakes.NUM_TRAIN))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
    state = create_train_state(variables, tx, use_ema=True)
    step = steps.make_train_step(model, tx, config=config, num_classes=fakes.NUM_CLASSES)
    batch = jax.tree.map(jnp.asarray, fakes.train_batch(0, global_batch_size=16, seed=0))
    with pytest.raises(ValueError, match="ema=run_plan.ema"):
        jax.eval_shape(step, state, batch)


def test_loading_the_ema_of_a_checkpoint_takes_its_averaged_statistics(tmp_path):
    from cnn_flax.training import checkpoint

    params = {"dense": {"kernel": np.ones((2, 2), np.float32)}}
    stats = {"bn": {"mean": np.zeros(2, np.float32), "var": np.ones(2, np.float32)}}
    ema_stats = {"bn": {"mean": np.full(2, 0.5, np.float32), "var": np.full(2, 2.0, np.float32)}}
    state = {
        "step": np.int32(3),
        "params": params,
        "batch_stats": stats,
        "ema_params": jax.tree.map(lambda x: 2 * x, params),
        "ema_batch_stats": ema_stats,
    }
    manager = checkpoint.CheckpointManager(tmp_path, keep=1, keep_best=False, async_save=False)
    manager.save(3, state)
    manager.close()
    ema = checkpoint.load_variables(tmp_path, ema=True)
    jax.tree.map(np.testing.assert_array_equal, ema["batch_stats"], ema_stats)
    jax.tree.map(np.testing.assert_array_equal, ema["params"], state["ema_params"])
    raw = checkpoint.load_variables(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, raw["batch_stats"], stats)
