"""BatchNorm statistics re-estimated on training images (cnn_flax.training.bn_reestimate), alone
and inside the trainer's evaluation (config.bn_reestimate_batches)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_flax.models.norm import BatchNorm, FrozenBatchNorm
from cnn_flax.training.bn_reestimate import reestimate_batch_stats
from tests.training import fakes


class _Net(nn.Module):
    """BatchNorm on the images themselves (so its statistics are those of the pixels), a conv,
    a second BatchNorm, a classifier: momentum 0.99, statistics that lag for hundreds of steps."""

    norm: type = BatchNorm
    unbiased: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool):
        def norm(name):
            kwargs = {} if self.norm is FrozenBatchNorm else {"unbiased_running_var": self.unbiased}
            return self.norm(use_running_average=not train, momentum=0.99, name=name, **kwargs)

        x = norm("bn0")(x)
        x = nn.Conv(6, (3, 3), name="conv")(x)
        x = nn.relu(norm("bn1")(x))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


class _Plain(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        return nn.Dense(3)(x)


def _images(n: int, seed: int) -> jax.Array:
    # Far from the initial statistics (mean 0, var 1): mean 3, std 2, per-channel offsets.
    rng = np.random.default_rng(seed)
    return jnp.asarray(3.0 + 2.0 * rng.standard_normal((n, 6, 6, 3)) + [0.0, 1.0, -1.0])


def _stale(model: nn.Module, steps: int = 3) -> dict:
    """Fresh variables trained ``steps`` SGD steps: weights moved, statistics still ~97% initial."""
    variables = model.init(jax.random.key(0), _images(2, 0), train=False)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.sgd(0.1)
    opt = tx.init(params)
    labels = jnp.arange(8) % 3
    for step in range(steps):
        x = _images(8, 100 + step)

        def loss(p, stats=stats, x=x):
            logits, new = model.apply(
                {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return ce, new["batch_stats"]

        (_, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt = tx.update(grads, opt)
        params = optax.apply_updates(params, updates)
    return {"params": params, "batch_stats": stats}


def _direct(model: nn.Module, variables: dict, batches: list[jax.Array]) -> dict:
    """Per layer, the average over ``batches`` of the batch mean and unbiased batch variance of
    its input, computed from the activations themselves."""
    sums = {}
    for x in batches:
        _, state = model.apply(
            variables, x, train=True, mutable=["batch_stats", "intermediates"],
            capture_intermediates=True,
        )  # fmt: skip
        inputs = {"bn0": x, "bn1": state["intermediates"]["conv"]["__call__"][0]}
        for name, a in inputs.items():
            a = np.asarray(a, np.float64).reshape(-1, a.shape[-1])
            mean, var = a.mean(axis=0), a.var(axis=0, ddof=1)
            prev = sums.get(name, (0.0, 0.0))
            sums[name] = (prev[0] + mean, prev[1] + var)
    n = len(batches)
    return {name: {"mean": m / n, "var": v / n} for name, (m, v) in sums.items()}


def test_reestimated_statistics_equal_those_of_the_images():
    model = _Net()
    variables = _stale(model)
    batches = [_images(8, seed) for seed in (1, 2, 3)]
    direct = _direct(model, variables, batches)
    for name in ("bn0", "bn1"):  # the trained statistics are far from the images' own
        assert not np.allclose(variables["batch_stats"][name]["mean"], direct[name]["mean"], 0.1)
    stats = reestimate_batch_stats(model, variables, iter(batches + [_images(8, 9)]), num_batches=3)
    for name in ("bn0", "bn1"):
        for key in ("mean", "var"):
            np.testing.assert_allclose(stats[name][key], direct[name][key], rtol=2e-5, atol=2e-6)
    # The first layer's statistics are the pixels' (mean 3 plus the channel offsets).
    np.testing.assert_allclose(stats["bn0"]["mean"], [3.0, 4.0, 2.0], atol=0.25)


def test_evaluation_after_reestimation_normalises_with_the_images_statistics():
    """Re-estimated on one batch with Flax's biased variance, eval mode normalises exactly as
    train mode does on that batch: the same logits. With the stale statistics it does not."""
    model = _Net(unbiased=False)
    variables = _stale(model)
    x = _images(16, 5)
    train_logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    stale = model.apply(variables, x, train=False)
    assert not np.allclose(stale, train_logits, atol=1e-2)
    stats = reestimate_batch_stats(model, variables, [x])
    fresh = model.apply({**variables, "batch_stats": stats}, x, train=False)
    np.testing.assert_allclose(fresh, train_logits, rtol=1e-4, atol=1e-5)


def test_frozen_statistics_and_models_without_batch_norm_are_kept():
    frozen = _Net(norm=FrozenBatchNorm)
    variables = _stale(frozen, steps=0)
    stats = reestimate_batch_stats(frozen, variables, [_images(8, 1)])
    jax.tree.map(np.testing.assert_array_equal, stats, variables["batch_stats"])
    plain = _Plain()
    variables = plain.init(jax.random.key(0), jnp.ones((2, 4)), train=False)
    assert reestimate_batch_stats(plain, variables, [jnp.ones((2, 4))]) == {}
    with pytest.raises(ValueError, match="at least one batch"):
        reestimate_batch_stats(_Net(), _stale(_Net(), steps=0), [])


def test_trainer_evaluates_with_reestimated_statistics(tmp_path):
    """The real path: ``bn_reestimate_batches=2`` makes the trainer's evaluation use statistics
    re-estimated on the run's first two training batches; the state keeps its own."""
    from cnn_flax.data.mixing import normalize
    from cnn_flax.training import eval_loop, parallel, trainer
    from cnn_flax.training.model_builder import build_model

    config = fakes.tiny_config(total_steps=2, eval_every_steps=2, checkpoint_every_steps=0)
    plain = trainer.train(config, tmp_path / "a", data_source=fakes.FakeData(), show_progress=False)
    config.bn_reestimate_batches = 2
    data = fakes.FakeData()
    result = trainer.train(config, tmp_path / "b", data_source=data, show_progress=False)
    jax.tree.map(np.testing.assert_array_equal, result.state.batch_stats, plain.state.batch_stats)
    assert result.eval_metrics["eval_loss"] != pytest.approx(plain.eval_metrics["eval_loss"])

    mesh = parallel.create_mesh(None)
    model = build_model(config, num_classes=fakes.NUM_CLASSES, num_devices=mesh.size)
    stream = data.create_train_iterator(
        config.data, global_batch_size=16, seed=int(config.seed),
        sharding=parallel.data_sharding(mesh),
    )  # fmt: skip
    mean, std = tuple(config.data.mean), tuple(config.data.std)
    images = (normalize(b["image"], mean=mean, std=std, dtype=jnp.float32) for b in stream)
    variables = result.state.variables()
    stats = reestimate_batch_stats(model, variables, images, num_batches=2)
    config.bn_reestimate_batches = 0
    evaluator = eval_loop.Evaluator(
        model, config=config, num_classes=fakes.NUM_CLASSES, mesh=mesh, data_source=data,
        batch_size=16,
    )  # fmt: skip
    expected = evaluator.run({**variables, "batch_stats": stats})
    assert result.eval_metrics["eval_loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_evaluator_keeps_frozen_and_absent_statistics():
    """A frozen fine-tune is evaluated with the statistics it trained against (they are the
    point of that run), and the option off changes nothing."""
    from cnn_flax.training import eval_loop, parallel

    mesh = parallel.create_mesh(None)
    variables = {"params": {}, "batch_stats": {"bn0": {"mean": jnp.zeros(3)}}}

    def evaluator(config):
        return eval_loop.Evaluator(
            _Net(), config=config, num_classes=3, mesh=mesh, data_source=None, batch_size=16
        )

    frozen = fakes.tiny_config(bn_reestimate_batches=2)
    frozen.finetune.freeze_bn_stats = True
    assert evaluator(frozen).reestimated(variables) is variables
    off = fakes.tiny_config(bn_reestimate_batches=0)
    assert evaluator(off).reestimated(variables) is variables


def test_reestimating_at_every_evaluation_compiles_once():
    """A run re-estimates before each evaluation: the train-mode pass must be compiled once per
    model, not once per evaluation."""
    from cnn_flax.training import bn_reestimate

    model = _Net()
    bn_reestimate._batch_moments_fn.cache_clear()
    for steps in (1, 2):  # other weights, the same model and layers
        reestimate_batch_stats(model, _stale(model, steps), iter([_images(8, 1)]), num_batches=1)
    info = bn_reestimate._batch_moments_fn.cache_info()
    assert (info.misses, info.hits) == (1, 1), info
    (moments,) = {bn_reestimate._batch_moments_fn(model, key) for key in _scale_keys(model)}
    assert moments._cache_size() == 1


def _scale_keys(model: nn.Module) -> list:
    """The cache key the two calls above used (one layer set, momentum 0.99)."""
    scale = tuple(sorted({("bn0", "mean"), ("bn0", "var"), ("bn1", "mean"), ("bn1", "var")}))
    return [tuple((k, 1.0 / (1.0 - 0.99)) for k in scale)]
