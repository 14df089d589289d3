"""The benchmark's train step: it trains, updates BatchNorm statistics, and remat is exact."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnn_flax.perf import jax_steps


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, *, train):
        x = nn.Conv(4, (3, 3), use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(10)(x)


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Conv(x.shape[-1], (3, 3), use_bias=False)(x)
        return x + nn.relu(nn.BatchNorm(use_running_average=False, momentum=0.9)(y))


class _TinyRes(nn.Module):
    block: type = _Block

    @nn.compact
    def __call__(self, x, *, train):
        x = nn.Conv(4, (3, 3))(x)
        x = self.block(name="stage1_block0")(x)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def _run(remat: str, model_cls: type = _Tiny):
    model, tx = model_cls(), jax_steps.sgd_momentum(0.1)
    if remat == "blocks":
        model = jax_steps.remat_blocks(model)
    state = jax_steps.init_state(model, resolution=8, tx=tx)
    images = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    labels = jnp.arange(4) % 10
    step = jax.jit(jax_steps.make_train_step(model, tx, remat=remat))
    new_state, loss = step(state, images, labels)
    return state, new_state, loss


def test_train_step_updates_params_stats_and_step():
    state, new_state, loss = _run("none")
    assert int(new_state["step"]) == 1
    assert jnp.isfinite(loss)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state, new_state)
    assert all(jax.tree.leaves(changed["params"]))
    assert all(jax.tree.leaves(changed["batch_stats"]))


@pytest.mark.parametrize("remat", ["dots", "full"])
def test_remat_gives_the_same_step(remat):
    _, expected, loss = _run("none")
    _, got, remat_loss = _run(remat)
    chex.assert_trees_all_close(got, expected, atol=1e-6)
    chex.assert_trees_all_close(remat_loss, loss, atol=1e-6)


def test_remat_blocks_gives_the_same_step_and_names():
    _, expected, _ = _run("none", _TinyRes)
    _, got, _ = _run("blocks", _TinyRes)
    assert "stage1_block0" in got["params"]
    chex.assert_trees_all_close(got, expected, atol=1e-6)


def test_remat_blocks_needs_a_block_field():
    with pytest.raises(ValueError, match="`block` field"):
        jax_steps.remat_blocks(_Tiny())


def test_unknown_remat_is_refused():
    with pytest.raises(ValueError, match="'dots'"):
        jax_steps.make_train_step(_Tiny(), jax_steps.sgd_momentum(), remat="some")
