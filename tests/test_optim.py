"""Schedules, weight-decay masks, update rules, accumulation, EMA and loss scaling."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_flax.configs import base
from cnn_flax.training import optim
from cnn_flax.training.run_plan import make_run_plan


def _config(**fields):
    config = base.get_base_config()
    config.batch_size = 512  # peak = 2 x base lr
    config.num_epochs = 10.0
    config.optimizer.lr = 0.1
    for key, value in fields.items():
        node = config
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _plan(config, *, spe=100):
    """The run plan of ``config`` on a data set of ``spe`` batches (10 epochs: 1000 steps)."""
    return make_run_plan(config, num_train=spe * config.batch_size)


def _lr(config, steps, *, spe=100):
    schedule = optim.create_learning_rate_schedule(config, _plan(config, spe=spe))
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps)))


def test_cosine_with_warmup():
    config = _config(schedule__name="cosine", schedule__warmup_epochs=1.0)
    lr = _lr(config, [0, 50, 100, 550, 1000])
    np.testing.assert_allclose(lr, [0.0, 0.1, 0.2, 0.1, 0.0], atol=1e-6)


def test_cosine_end_factor_and_no_scaling():
    config = _config(schedule__end_lr_factor=0.1, optimizer__lr_scaling="none")
    np.testing.assert_allclose(_lr(config, [0, 1000, 5000]), [0.1, 0.01, 0.01], rtol=1e-5)


def test_step_boundaries():
    config = _config(schedule__name="step", schedule__boundaries_epochs=(3.0, 6.0))
    lr = _lr(config, [0, 299, 300, 599, 600, 999])
    np.testing.assert_allclose(lr, [0.2, 0.2, 0.02, 0.02, 0.002, 0.002], rtol=1e-5)


def test_linear_and_constant():
    config = _config(schedule__name="linear", schedule__warmup_epochs=2.0)
    np.testing.assert_allclose(_lr(config, [100, 200, 600, 1000]), [0.1, 0.2, 0.1, 0.0], atol=1e-6)
    config = _config(schedule__name="constant")
    np.testing.assert_allclose(_lr(config, [0, 999]), [0.2, 0.2], rtol=1e-6)


def test_exponential_staircase_counts_from_step_zero():
    config = _config(
        schedule__name="exponential",
        schedule__warmup_epochs=1.0,
        schedule__decay_epochs=2.4,
        schedule__decay_rate=0.97,
    )
    lr = _lr(config, [50, 100, 239, 240, 480])
    np.testing.assert_allclose(lr, [0.1, 0.2, 0.2, 0.2 * 0.97, 0.2 * 0.97**2], rtol=1e-5)
    config.schedule.staircase = False
    np.testing.assert_allclose(_lr(config, [360]), [0.2 * 0.97**1.5], rtol=1e-5)


def test_constant_warmup_shape():
    config = _config(
        schedule__name="constant",
        schedule__warmup_epochs=1.0,
        schedule__warmup_shape="constant",
        schedule__warmup_init_factor=0.1,
    )
    np.testing.assert_allclose(_lr(config, [0, 99, 100]), [0.02, 0.02, 0.2], rtol=1e-5)


def test_total_steps_compresses_the_schedule():
    config = _config(schedule__name="step", schedule__boundaries_epochs=(5.0,), total_steps=100)
    assert _plan(config).total_steps == 100
    np.testing.assert_allclose(_lr(config, [49, 50]), [0.2, 0.02], rtol=1e-5)


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn")(x)
        x = nn.LayerNorm(use_bias=False, name="ln")(x)
        return nn.Dense(3, name="head")(x.mean((1, 2)))


def _tiny_params():
    """Parameters with Flax's own leaf names, from shapes alone (nothing to compile)."""
    shapes = jax.eval_shape(lambda: _Tiny().init(jax.random.key(0), jnp.ones((1, 4, 4, 2))))
    leaves, treedef = jax.tree.flatten(shapes["params"])
    return treedef.unflatten([jnp.full(x.shape, i + 1.0) for i, x in enumerate(leaves)])


def test_weight_decay_mask_excludes_norm_and_bias():
    mask = optim.no_bn_bias_mask(_tiny_params())
    assert mask == {
        "conv": {"kernel": True, "bias": False},
        "bn": {"scale": False, "bias": False},
        "ln": {"scale": False},
        "head": {"kernel": True, "bias": False},
    }
    # With zero gradients only the decayed leaves move.
    config = _config(
        optimizer__lr_scaling="none", optimizer__momentum=0.0, optimizer__weight_decay=0.5
    )
    config.schedule.name = "constant"
    params = _tiny_params()
    tx = optim.create_optimizer(config, _plan(config, spe=1))
    grads = jax.tree.map(jnp.zeros_like, params)
    new, _ = _run(tx, params, [grads])
    chex.assert_trees_all_close(new, jax.tree.map(lambda p, m: p - 0.05 * p * m, params, mask))
    config.optimizer.weight_decay_mask = "all"
    assert optim.weight_decay_mask(config) is None  # optax: decay every leaf


def test_no_norm_mask_spares_only_norm_layers():
    mask = optim.no_norm_mask(_tiny_params())
    assert mask == {
        "conv": {"kernel": True, "bias": True},
        "bn": {"scale": False, "bias": False},
        "ln": {"scale": False},
        "head": {"kernel": True, "bias": True},
    }


def _torchvision_decay_groups(model) -> tuple[list[int], list[int]]:
    """Sizes of the decayed and the undecayed parameters under torchvision's
    ``set_weight_decay(model, wd, norm_weight_decay=0.0)`` (references/classification/utils.py):
    a parameter owned directly by a norm module (its ``norm_classes``) is undecayed."""
    import torch

    norm_classes = (
        torch.nn.modules.batchnorm._BatchNorm,
        torch.nn.LayerNorm,
        torch.nn.GroupNorm,
        torch.nn.modules.instancenorm._InstanceNorm,
        torch.nn.LocalResponseNorm,
    )
    decayed, spared = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            (spared if isinstance(module, norm_classes) else decayed).append(p.numel())
    return sorted(decayed), sorted(spared)


@pytest.mark.torch
@pytest.mark.parametrize(
    "name", ["resnet50", "mobilenet_v3_large", "convnext_tiny", "vit_b_16", "swin_t"]
)
def test_no_norm_mask_is_torchvisions_norm_weight_decay_0(name):
    torchvision = pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    from cnn_flax.models import create_model, model_info

    with torch.device("meta"):  # shapes only: nothing allocated or initialised
        theirs = _torchvision_decay_groups(getattr(torchvision.models, name)())
    model = create_model(name)
    res = model_info(name).resolution
    params = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), train=False)
    )["params"]
    mask = optim.no_norm_mask(params)
    pairs = list(zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True))
    ours = (
        sorted(p.size for p, m in pairs if m),
        sorted(p.size for p, m in pairs if not m),
    )
    assert ours == theirs


def _run(tx, params, grads_seq):
    """Applies ``tx`` to ``grads_seq`` in one jitted scan (eager dispatch is slow on CPU)."""

    def step(carry, g):
        params, state = carry
        updates, state = tx.update(g, state, params)
        return (optax.apply_updates(params, updates), state), params

    grads = jax.tree.map(lambda *g: jnp.stack(g), *grads_seq)
    (params, _), history = jax.jit(lambda p, gs: jax.lax.scan(step, (p, tx.init(p)), gs))(
        params, grads
    )
    return params, history


def test_sgd_nesterov_matches_hand_computation():
    config = _config(
        optimizer__lr_scaling="none",
        optimizer__nesterov=True,
        optimizer__weight_decay=0.01,
        optimizer__weight_decay_mask="all",
        schedule__name="constant",
    )
    w0 = jnp.array([1.0, -2.0])
    g1, g2 = jnp.array([0.5, 0.5]), jnp.array([-1.0, 2.0])
    tx = optim.create_optimizer(config, _plan(config, spe=1))
    w, _ = _run(tx, w0, [g1, g2])
    # PyTorch SGD: d = g + wd*w; buf = m*buf + d; w -= lr * (d + m*buf).
    lr, m, wd = 0.1, 0.9, 0.01
    d1 = g1 + wd * w0
    buf = d1
    w1 = w0 - lr * (d1 + m * buf)
    d2 = g2 + wd * w1
    buf = m * buf + d2
    w2 = w1 - lr * (d2 + m * buf)
    chex.assert_trees_all_close(w, w2, rtol=1e-6)


def test_rmsprop_tf_style_matches_hand_computation():
    config = _config(
        optimizer__name="rmsprop",
        optimizer__lr_scaling="none",
        optimizer__eps=1e-3,
        optimizer__rmsprop_initial_scale=1.0,
        optimizer__weight_decay=0.0,
        schedule__name="linear",  # a changing lr: TF keeps lr inside the momentum buffer
        schedule__end_lr_factor=0.5,
        num_epochs=4.0,  # 4 steps of 1 per epoch
    )
    w0 = jnp.array([1.0, -2.0])
    grads = [jnp.array([0.5, 0.5]), jnp.array([-1.0, 2.0]), jnp.array([0.1, -0.3])]
    tx = optim.create_optimizer(config, _plan(config, spe=1))
    w, _ = _run(tx, w0, grads)
    ms, mom, wh = np.ones(2), np.zeros(2), np.asarray(w0, np.float64)
    for t, g in enumerate(grads):
        lr = 0.1 * (1 - 0.5 * t / 4)
        g = np.asarray(g, np.float64)
        ms = 0.9 * ms + 0.1 * g**2
        mom = 0.9 * mom + lr * g / np.sqrt(ms + 1e-3)
        wh = wh - mom
    chex.assert_trees_all_close(w, jnp.asarray(wh, jnp.float32), rtol=1e-5)


# MultiSteps is generic: momentum (sgd), our TF RMSProp chain and a trust-ratio rule suffice.
@pytest.mark.parametrize("name", ["sgd", "rmsprop", "lamb"])
def test_accumulating_k_micro_batches_equals_one_big_batch(name):
    config = _config(optimizer__name=name, optimizer__weight_decay=1e-2, clip_grad_norm=1.0)
    config.schedule.name = "constant"
    key = jax.random.key(0)
    x = jax.random.normal(key, (8, 3))
    y = x @ jnp.array([1.0, -1.0, 0.5])
    params = {"kernel": jnp.full((3, 2), 0.3), "bias": jnp.zeros((2,))}

    @jax.jit
    def grad(p, xb, yb):
        return jax.grad(lambda p: jnp.mean(((xb @ p["kernel"] + p["bias"]).sum(-1) - yb) ** 2))(p)

    big = optim.create_optimizer(config, _plan(config, spe=1))
    expected, _ = _run(big, params, [grad(params, x, y)])
    config.grad_accum_steps = 4
    acc = optim.create_optimizer(config, _plan(config, spe=1))
    assert _plan(config, spe=1).grad_accum_steps == 4
    micro = [grad(params, x[i : i + 2], y[i : i + 2]) for i in range(0, 8, 2)]
    result, history = _run(acc, params, micro)
    # Nothing moves until the k-th micro-batch; then the update equals the big batch's.
    chex.assert_trees_all_close(history, jax.tree.map(lambda p: jnp.stack([p] * 4), params))
    chex.assert_trees_all_close(result, expected, rtol=1e-5, atol=1e-7)


def test_gradient_clipping_by_global_norm():
    config = _config(
        optimizer__lr_scaling="none",
        optimizer__momentum=0.0,
        optimizer__weight_decay=0.0,
        schedule__name="constant",
        clip_grad_norm=1.0,
    )
    tx = optim.create_optimizer(config, _plan(config, spe=1))
    new, _ = _run(tx, jnp.zeros(2), [jnp.array([30.0, 40.0])])
    chex.assert_trees_all_close(new, jnp.array([-0.06, -0.08]), rtol=1e-6)


def test_ema():
    ema = optim.ema_update({"w": jnp.array(1.0)}, {"w": jnp.array(3.0)}, 0.75)
    chex.assert_trees_all_close(ema, {"w": jnp.array(1.5)})
    assert float(optim.ema_decay_at(0, 0.9999, warmup=True)) == pytest.approx(0.1)
    assert float(optim.ema_decay_at(10**6, 0.9999, warmup=True)) == pytest.approx(0.9999)
    assert float(optim.ema_decay_at(0, 0.9999, warmup=False)) == pytest.approx(0.9999)


def test_loss_scale_shrinks_on_overflow_and_grows_after_interval():
    ls = optim.init_loss_scale(2.0**15, growth_interval=3)
    assert float(optim.scale_loss(ls, jnp.array(2.0))) == 2.0**16
    grads = optim.unscale_grads(ls, {"g": jnp.array([2.0**15], jnp.float16)})
    assert grads["g"].dtype == jnp.float32 and float(grads["g"][0]) == 1.0
    assert not bool(optim.all_finite({"a": jnp.array([1.0, jnp.inf]), "b": jnp.ones(2)}))
    assert bool(optim.all_finite({"a": jnp.ones(2)}))

    adjust = jax.jit(optim.adjust_loss_scale)
    ls = adjust(ls, jnp.array(False))
    assert (float(ls.scale), int(ls.finite_steps)) == (2.0**14, 0)
    for expected_steps in (1, 2):
        ls = adjust(ls, jnp.array(True))
        assert (float(ls.scale), int(ls.finite_steps)) == (2.0**14, expected_steps)
    ls = adjust(ls, jnp.array(True))  # the third finite step in a row: grow
    assert (float(ls.scale), int(ls.finite_steps)) == (2.0**15, 0)
    ls = optim.init_loss_scale(1.0)
    assert float(optim.adjust_loss_scale(ls, jnp.array(False)).scale) == 1.0  # floor
    picked = optim.select_tree(jnp.array(False), {"a": jnp.ones(2)}, {"a": jnp.zeros(2)})
    chex.assert_trees_all_close(picked, {"a": jnp.zeros(2)})


def _one_update(config, params, grads):
    config.total_steps = 100
    tx = optim.create_optimizer(config, make_run_plan(config, num_train=10 * config.batch_size))
    updates, _ = tx.update(grads, tx.init(params), params)
    return jax.tree.map(np.asarray, updates)


def test_backbone_learning_rate_and_linear_probe():
    """finetune.backbone_lr_mult scales the backbone's updates, exactly; a linear probe
    (trainable=head) leaves the backbone at zero and updates the head as training all would."""
    params = {"stem": {"kernel": jnp.ones((3, 3))}, "head": {"kernel": jnp.ones((3, 2))}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    fields = {"optimizer__name": "sgd", "optimizer__weight_decay": 1e-4}
    base_updates = _one_update(_config(**fields), params, grads)
    scaled = _one_update(_config(**fields, finetune__backbone_lr_mult=0.1), params, grads)
    np.testing.assert_allclose(scaled["stem"]["kernel"], 0.1 * base_updates["stem"]["kernel"])
    np.testing.assert_array_equal(scaled["head"]["kernel"], base_updates["head"]["kernel"])
    assert np.all(base_updates["stem"]["kernel"] != 0)

    probe = _one_update(_config(**fields, finetune__trainable="head"), params, grads)
    np.testing.assert_array_equal(probe["stem"]["kernel"], 0)
    np.testing.assert_array_equal(probe["head"]["kernel"], base_updates["head"]["kernel"])


def test_linear_probe_gradients_stop_at_the_head():
    params = {"stem": {"kernel": jnp.ones(3)}, "head": {"kernel": jnp.ones(3)}}
    probe = _config(finetune__trainable="head")

    def loss(p, config):
        p = optim.stop_frozen_gradients(p, config)
        return jnp.sum(p["stem"]["kernel"] * p["head"]["kernel"])

    frozen = jax.grad(loss)(params, probe)
    np.testing.assert_array_equal(frozen["stem"]["kernel"], 0)
    np.testing.assert_array_equal(frozen["head"]["kernel"], 1)
    every = jax.grad(loss)(params, _config())
    np.testing.assert_array_equal(every["stem"]["kernel"], 1)
