"""The pure train step: mixed precision, float16 loss scaling, rng, aux losses."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import layers
from cnn_flax.training import metrics as metrics_lib
from cnn_flax.training import optim, steps
from cnn_flax.training.run_plan import make_run_plan
from cnn_flax.training.state import create_train_state
from tests.training import fakes


def _setup(dtype: str, **changes):
    config = fakes.tiny_config(dtype=dtype, **changes)
    model = fakes.TinyCNN(dtype=steps.compute_dtype(dtype))
    tx = optim.create_optimizer(config, make_run_plan(config, num_train=fakes.NUM_TRAIN))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
    state = create_train_state(
        variables, tx, use_ema=False, loss_scale=steps.initial_loss_scale(config)
    )
    step = jax.jit(steps.make_train_step(model, tx, config=config, num_classes=fakes.NUM_CLASSES))
    batch = jax.tree.map(jnp.asarray, fakes.train_batch(0, global_batch_size=16, seed=0))
    return state, step, batch


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_keeps_float32_state(dtype):
    state, step, batch = _setup(dtype)
    new, metrics = step(state, batch)
    for leaf in jax.tree.leaves((new.params, new.opt_state, new.batch_stats)):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    assert np.isfinite(float(metrics["loss"][0]))
    assert (new.loss_scale is not None) == (dtype == "float16")


def test_float16_overflow_skips_the_step_and_halves_the_scale():
    state, step, batch = _setup("float16", **{"loss_scale.initial": 2.0**40})
    new, metrics = step(state, batch)
    chex.assert_trees_all_equal(new.params, state.params)  # overflowed step skipped
    assert float(new.loss_scale.scale) == 2.0**39
    assert float(metrics["nonfinite"][0]) == 0.0  # the loss itself was finite


def _flags(metrics: dict) -> dict[str, float]:
    return {k: float(v[0]) for k, v in metrics.items() if metrics_lib.is_flag(k)}


def test_a_state_that_overflows_is_flagged_though_the_loss_is_finite():
    state, step, batch = _setup("float32")
    parts = ("params", "batch_stats", "opt_state", "ema_params", "ema_batch_stats")
    _, metrics = step(state, batch)
    assert _flags(metrics) == {"nonfinite": 0.0, **{f"nonfinite_{p}": 0.0 for p in parts}}
    state = state.replace(params=fakes.overflowing_batch_norm(state.params))
    new, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"][0])) and np.isfinite(float(metrics["grad_norm"][0]))
    assert not np.isfinite(np.asarray(new.batch_stats["bn0"]["var"])).all()
    assert _flags(metrics) == {
        "nonfinite": 0.0,  # the loss and gradient alone would let this state be saved
        "nonfinite_params": 0.0,
        "nonfinite_batch_stats": 1.0,
        "nonfinite_opt_state": 0.0,
        "nonfinite_ema_params": 0.0,
        "nonfinite_ema_batch_stats": 0.0,
    }


def test_dropout_rng_depends_on_step_only():
    state, step, batch = _setup("float32")
    # The loss is computed before the update, so it differs only through the dropout mask.
    _, a = step(state, batch)
    _, b = step(state, batch)
    _, c = step(state.replace(step=state.step + 1), batch)
    assert float(a["loss"][0]) == float(b["loss"][0])  # same (seed, step): same mask
    assert float(a["loss"][0]) != float(c["loss"][0])


class _WithAux(fakes.TinyCNN):
    """TinyCNN that also sows an auxiliary output in train mode, as GoogLeNet does (no extra
    parameters)."""

    @nn.compact
    def __call__(self, x, *, train):
        logits = super().__call__(x, train=train)
        if train:
            self.sow(layers.AUX_COLLECTION, "aux1_logits", 3.0 * logits)
        return logits


def _aux_setup(aux_loss_weight: float):
    config = fakes.tiny_config(aux_loss_weight=aux_loss_weight)
    tx = optim.create_optimizer(config, make_run_plan(config, num_train=fakes.NUM_TRAIN))
    variables = _WithAux().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
    state = create_train_state(variables, tx, use_ema=False)
    batch = jax.tree.map(jnp.asarray, fakes.train_batch(0, global_batch_size=16, seed=0))

    def step_for(model):
        return jax.jit(
            steps.make_train_step(model, tx, config=config, num_classes=fakes.NUM_CLASSES)
        )

    return state, batch, step_for


def test_auxiliary_logits_are_weighted():
    state, batch, step_for = _aux_setup(0.5)
    _, ma = step_for(_WithAux())(state, batch)
    _, mb = step_for(fakes.TinyCNN())(state, batch)  # same parameters, no auxiliary output
    assert float(ma["loss"][0]) == pytest.approx(float(mb["loss"][0]))  # main loss reported
    assert float(ma["grad_norm"][0]) != pytest.approx(float(mb["grad_norm"][0]))


def test_auxiliary_logits_without_a_loss_weight_are_refused():
    state, batch, step_for = _aux_setup(0.0)
    with pytest.raises(ValueError, match="aux_loss_weight is 0"):
        step_for(_WithAux())(state, batch)


def test_random_erasing_reaches_the_step():
    """``data.augment.random_erasing`` changes what the model sees; at 0 the step is unchanged."""
    losses = {}
    for p in (0.0, 1.0):
        state, step, batch = _setup("float32", **{"data.augment.random_erasing": p})
        _, metrics = step(state, batch)
        losses[p] = float(metrics["loss"][0])
    state, step, batch = _setup("float32")
    _, metrics = step(state, batch)
    assert losses[0.0] == float(metrics["loss"][0])
    assert losses[1.0] != losses[0.0]
