"""GroupBatchNorm (per-device BN): interchangeable with nn.BatchNorm, statistics per group."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models.norm import GroupBatchNorm
from cnn_flax.training import parallel
from tests.helpers import random_variables

X = jax.random.normal(jax.random.key(0), (8, 3, 3, 5)) * 2.0 + 1.0


def _apply(module, variables, x):
    return module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])


def test_one_group_is_flax_batchnorm():
    ref = nn.BatchNorm(momentum=0.9, scale_init=nn.initializers.constant(0.5))
    mine = GroupBatchNorm(
        momentum=0.9,
        scale_init=nn.initializers.constant(0.5),
        num_groups=1,
        unbiased_running_var=False,  # Flax's convention; torch's is checked below
    )
    v_ref = ref.init(jax.random.key(1), X, use_running_average=False)
    v_mine = mine.init(jax.random.key(1), X, use_running_average=False)
    chex.assert_trees_all_equal_shapes_and_dtypes(v_ref, v_mine)  # same names and shapes
    (y_ref, s_ref), (y_mine, s_mine) = _apply(ref, v_ref, X), _apply(mine, v_mine, X)
    chex.assert_trees_all_close(y_ref, y_mine, atol=1e-5)
    chex.assert_trees_all_close(s_ref, s_mine, atol=1e-6)
    eval_ref = ref.apply(s_ref | {"params": v_ref["params"]}, X, use_running_average=True)
    eval_mine = mine.apply(s_mine | {"params": v_mine["params"]}, X, use_running_average=True)
    chex.assert_trees_all_close(eval_ref, eval_mine, atol=1e-5)


def test_groups_are_normalised_separately():
    groups = 4
    mine = GroupBatchNorm(momentum=0.0, num_groups=groups, unbiased_running_var=False)
    v = mine.init(jax.random.key(1), X, use_running_average=False)
    y, stats = _apply(mine, v, X)
    ref = nn.BatchNorm(momentum=0.0)
    parts = [_apply(ref, v, part) for part in jnp.split(X, groups)]
    chex.assert_trees_all_close(y, jnp.concatenate([p[0] for p in parts]), atol=1e-5)
    mean = np.mean([p[1]["batch_stats"]["mean"] for p in parts], axis=0)
    var = np.mean([p[1]["batch_stats"]["var"] for p in parts], axis=0)
    chex.assert_trees_all_close(stats["batch_stats"]["mean"], mean, atol=1e-6)
    chex.assert_trees_all_close(stats["batch_stats"]["var"], var, atol=1e-5)


def test_per_device_under_sharded_jit_matches_per_shard():
    mesh = parallel.create_mesh()
    mine = GroupBatchNorm(momentum=0.9, num_groups=mesh.size)
    v = mine.init(jax.random.key(1), X, use_running_average=False)
    x = jax.device_put(X, parallel.data_sharding(mesh))
    y, _ = jax.jit(lambda v, x: _apply(mine, v, x))(v, x)
    ref = nn.BatchNorm(momentum=0.9)
    expected = jnp.concatenate([_apply(ref, v, p)[0] for p in jnp.split(X, mesh.size)])
    chex.assert_trees_all_close(y, expected, atol=1e-5)


def test_indivisible_batch_is_refused():
    mine = GroupBatchNorm(num_groups=3)
    v = mine.init(jax.random.key(1), X, use_running_average=False)
    with pytest.raises(ValueError, match="not divisible into 3 groups"):
        _apply(mine, v, X)


def test_frozen_batch_norm_in_training_is_batch_norm_in_evaluation():
    """FrozenBatchNorm normalises with the running statistics in train mode and never updates
    them: the same outputs as an eval-mode nn.BatchNorm, and the same variables."""
    from cnn_flax.models.norm import FrozenBatchNorm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 3, 5)).astype(np.float32) * 2 + 1
    variables = {
        "params": {
            "scale": rng.uniform(0.5, 1.5, 5).astype(np.float32),
            "bias": rng.standard_normal(5).astype(np.float32),
        },
        "batch_stats": {
            "mean": rng.standard_normal(5).astype(np.float32),
            "var": rng.uniform(0.5, 2.0, 5).astype(np.float32),
        },
    }
    reference = nn.BatchNorm(use_running_average=True, epsilon=1e-3).apply(variables, x)
    frozen = FrozenBatchNorm(use_running_average=False, epsilon=1e-3)
    out, updates = frozen.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-6)
    for key in ("mean", "var"):
        np.testing.assert_array_equal(updates["batch_stats"][key], variables["batch_stats"][key])
    shapes = lambda tree: jax.tree.map(np.shape, tree)  # noqa: E731
    init = jax.eval_shape(lambda: frozen.init(jax.random.key(0), x))
    assert shapes(init) == shapes(variables)


def test_frozen_batch_norm_swaps_every_batch_norm_by_type():
    from cnn_flax.models import create_model
    from cnn_flax.models.norm import FrozenBatchNorm, frozen_batch_norm

    model = frozen_batch_norm(create_model("mobilenet_v3_small", bn_epsilon=0.0123))
    x = np.zeros((1, 32, 32, 3), np.float32)
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            seen.append((type(context.module), context.module.epsilon))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=True))
    assert seen and all(t is FrozenBatchNorm and eps == 0.0123 for t, eps in seen)


def _torch_step(x: np.ndarray, *, momentum: float, groups: int = 1):
    """torch's BatchNorm2d after one train-mode step on ``x`` (NHWC), per group averaged."""
    torch = pytest.importorskip("torch")
    means, vars_ = [], []
    for part in np.split(x, groups):
        bn = torch.nn.BatchNorm2d(x.shape[-1], momentum=1 - momentum).double()
        bn.train()
        bn(torch.from_numpy(part.transpose(0, 3, 1, 2)))
        means.append(bn.running_mean.numpy())
        vars_.append(bn.running_var.numpy())
    return np.mean(means, axis=0), np.mean(vars_, axis=0)


@pytest.mark.torch
@pytest.mark.parametrize("groups", [1, 2])
def test_running_variance_follows_torch(groups):
    """torch updates the running variance with the unbiased batch variance, n / (n - 1) times
    the biased one (here n = 2 * 3 * 3 = 18 per group: 5.9%); Flax with the biased one."""
    from cnn_flax.models.norm import BatchNorm

    x = np.asarray(X, np.float64)
    mean, var = _torch_step(x, momentum=0.9, groups=groups)
    mine = BatchNorm(momentum=0.9) if groups == 1 else GroupBatchNorm(momentum=0.9, num_groups=2)
    v = mine.init(jax.random.key(1), X, use_running_average=False)
    _, stats = _apply(mine, v, X)
    np.testing.assert_allclose(stats["batch_stats"]["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["batch_stats"]["var"], var, rtol=1e-5)
    # The option off is Flax's convention, which misses torch's by the factor's share.
    flax_stats = _apply(nn.BatchNorm(momentum=0.9), v, X)[1]["batch_stats"]["var"]
    assert np.max(np.abs(flax_stats / var - 1)) > 1e-3


def test_bind_norm_builds_torch_convention_and_keeps_names():
    """Every plain nn.BatchNorm a family binds becomes norm.BatchNorm: the same variable names
    and shapes (checkpoints load unchanged), torch's update; bn_running_var="biased" undoes it."""
    from cnn_flax.configs import get_config
    from cnn_flax.models import create_model
    from cnn_flax.models.norm import BatchNorm
    from cnn_flax.training.model_builder import build_model

    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)
    model = create_model("resnet20", num_classes=4)
    v = random_variables(model, x)
    seen = []

    def spy(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm):
            seen.append((type(context.module), context.module.unbiased_running_var))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(spy):
        _, unbiased = model.apply(v, x, train=True, mutable=["batch_stats"])
    assert seen and all(t is BatchNorm and flag for t, flag in seen)

    config = get_config("quickstart")
    config.model = "resnet20"
    config.bn_running_var = "biased"
    biased_model = build_model(config, num_classes=4, num_devices=1)
    _, biased = biased_model.apply(v, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_equal_shapes_and_dtypes(unbiased, biased)
    # The first BatchNorm sees the same input in both: n = 2 * 8 * 8 = 128 values per channel.
    first = jax.tree_util.tree_leaves_with_path(v["batch_stats"])[0][0][:-1]
    u = _at(unbiased["batch_stats"], first)
    b = _at(biased["batch_stats"], first)
    chex.assert_trees_all_close(u["mean"], b["mean"])
    ratio = (u["var"] - 0.9) / (b["var"] - 0.9)
    np.testing.assert_allclose(ratio, 128 / 127, rtol=1e-4)


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree
