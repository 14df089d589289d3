"""Pure train and eval steps, compiled once with ``jax.jit`` over the data-parallel mesh.

Both steps take uint8 images straight from the input pipeline and normalise them on device
(4x less host-to-device traffic than float32), and return metrics as ``(sum, count)`` pairs of
float32 scalars, reduced over the whole global batch inside the step. The host adds the pairs
up and divides only when it logs, so no step ever waits for the device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from cnn_flax.models import layers
from cnn_flax.training import optim
from cnn_flax.training.run_plan import EmaPlan
from cnn_flax.training.state import TrainState

Metrics = dict[str, tuple[jax.Array, jax.Array]]
Batch = dict[str, jax.Array]

# Flags, not means: a metric named NONFINITE (loss or gradient norm) or NONFINITE_<part> (a part
# of the new training state) is 1 for a step whose value went inf or nan.
NONFINITE = "nonfinite"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> jnp.dtype:
    """``config.dtype`` as a jnp dtype, with a clear error for anything else."""
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not supported; use one of {sorted(DTYPES)}.")
    return DTYPES[name]


def _pair(value: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(value, jnp.float32), jnp.ones((), jnp.float32)


def initial_loss_scale(config: ml_collections.ConfigDict) -> Any | None:
    """A dynamic loss scale for ``dtype="float16"``, else ``None`` (bfloat16 needs none)."""
    if config.dtype != "float16":
        return None
    return optim.init_loss_scale(
        float(config.loss_scale.initial), growth_interval=int(config.loss_scale.growth_interval)
    )


def state_finiteness(parts: Mapping[str, Any]) -> Metrics:
    """One ``nonfinite_<part>`` flag (a ``(sum, count)`` pair) per part of the new state.

    The loss and gradient norm can stay finite while the state does not: once activations pass
    ~1e19, BatchNorm's batch variance overflows to inf, the normalised output becomes 0 and so do
    the gradients through it, yet the running variance becomes inf and every later evaluation
    predicts one class. So every saved part is checked, inside the step (one fused reduction per
    part, no host sync); the flags travel with the metrics the loop already fetches
    asynchronously, and no state is saved before its steps are known to be finite.
    """
    return {f"{NONFINITE}_{name}": _pair(~optim.all_finite(t)) for name, t in parts.items()}


# --- steps ----------------------------------------------------------------------------------------


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    config: ml_collections.ConfigDict,
    num_classes: int,
    learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None,
    grad_accum_steps: int = 1,
    ema: EmaPlan | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Builds the pure train step ``(state, batch) -> (state, metrics)``.

    Randomness (dropout, drop path, random erasing, mixup/cutmix) comes from
    ``fold_in(key(seed), step)``, so a resumed run draws exactly the numbers an uninterrupted one
    would.

    Args:
      model: the Flax module (BatchNorm mode already chosen through its ``norm`` field).
      tx: the optax optimizer (from ``cnn_flax.training.optim.create_optimizer``).
      config: the training config, checked (dtype, seed, label_smoothing, aux_loss_weight,
        data.mean/std and the on-device augmentations of data.augment are read).
      num_classes: classifier outputs, for one-hot labels.
      learning_rate_fn: schedule evaluated for the ``lr`` metric (optional).
      grad_accum_steps: micro-steps per optimizer update (``RunPlan.grad_accum_steps``): the
        EMA and the ``lr`` metric advance once per update.
      ema: the weight EMA's plan (``RunPlan.ema``); required when the state carries EMA weights.
    """
    from cnn_flax.data.mixing import augment_batch, normalize
    from cnn_flax.training import losses

    dtype = compute_dtype(config.dtype)
    mean, std = tuple(config.data.mean), tuple(config.data.std)
    label_smoothing = float(config.label_smoothing)
    aux_weight = float(config.aux_loss_weight)
    accum = grad_accum_steps
    base_key = jax.random.key(int(config.seed))

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng = jax.random.fold_in(base_key, state.step)
        mix_rng, dropout_rng = jax.random.split(rng)
        images = normalize(batch["image"], mean=mean, std=std, dtype=dtype)
        int_labels = batch["label"]
        targets = jax.nn.one_hot(int_labels, num_classes, dtype=jnp.float32)
        # Random erasing per image, then mixup / CutMix (each a no-op when off).
        images, targets = augment_batch(mix_rng, images, targets, config.data.augment)

        def loss_fn(params):
            params = optim.stop_frozen_gradients(params, config)  # linear probe: head only
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                images,
                train=True,
                mutable=["batch_stats", layers.AUX_COLLECTION],
                rngs={"dropout": dropout_rng},
            )
            aux = layers.aux_outputs(updates)
            if aux and not aux_weight:
                # Raised while tracing, before the first step runs: auxiliary heads that the loss
                # ignores would be trained for nothing (and an ablation of them would compare a
                # model with itself).
                raise ValueError(
                    f"The model returns {len(aux)} auxiliary outputs but aux_loss_weight is 0; "
                    "set config.aux_loss_weight (0.3 in Szegedy et al. 2015) or turn the heads "
                    "off with config.model_overrides.aux_logits=False."
                )
            loss_sum, count = losses.cross_entropy(
                logits.astype(jnp.float32), targets, label_smoothing=label_smoothing
            )
            loss = loss_sum / count
            total = loss
            for aux_logits in aux:
                aux_sum, aux_count = losses.cross_entropy(
                    aux_logits.astype(jnp.float32), targets, label_smoothing=label_smoothing
                )
                total = total + aux_weight * aux_sum / aux_count
            if state.loss_scale is not None:
                total = optim.scale_loss(state.loss_scale, total)
            return total, (loss, logits, updates.get("batch_stats", {}))

        grads, (loss, logits, new_batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
        if state.loss_scale is not None:
            grads = optim.unscale_grads(state.loss_scale, grads)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        new_ema, new_ema_stats = _advance_ema(
            state, new_params, new_batch_stats, plan=ema, grad_accum_steps=accum
        )
        new_loss_scale = state.loss_scale
        if state.loss_scale is not None:
            # float16 overflow is expected now and then: skip the update, shrink the scale.
            grads_finite = optim.all_finite(grads)
            keep = functools.partial(optim.select_tree, grads_finite)
            new_params = keep(new_params, state.params)
            new_opt_state = keep(new_opt_state, state.opt_state)
            new_batch_stats = keep(new_batch_stats, state.batch_stats)
            if new_ema is not None:
                new_ema = keep(new_ema, state.ema_params)
            if new_ema_stats is not None:
                new_ema_stats = keep(new_ema_stats, state.ema_batch_stats)
            new_loss_scale = optim.adjust_loss_scale(state.loss_scale, grads_finite)
            finite = jnp.isfinite(loss)

        correct, count = losses.topk_correct(logits.astype(jnp.float32), int_labels, k=1)
        metrics: Metrics = {
            "loss": (loss * count, count),
            "accuracy": (correct, count),
            "grad_norm": _pair(grad_norm),
            NONFINITE: _pair(~finite),  # the loss or the gradient norm
        }
        metrics.update(
            state_finiteness(
                {
                    "params": new_params,
                    "batch_stats": new_batch_stats,
                    "opt_state": new_opt_state,
                    "ema_params": new_ema,
                    "ema_batch_stats": new_ema_stats,
                }
            )
        )
        if learning_rate_fn is not None:
            metrics["lr"] = _pair(learning_rate_fn(state.step // accum))
        if new_loss_scale is not None:
            metrics["loss_scale"] = _pair(new_loss_scale.scale)
        new_state = state.replace(
            step=state.step + 1,
            params=new_params,
            batch_stats=new_batch_stats,
            opt_state=new_opt_state,
            ema_params=new_ema,
            ema_batch_stats=new_ema_stats,
            loss_scale=new_loss_scale,
        )
        return new_state, metrics

    return train_step


def _advance_ema(
    state: TrainState,
    new_params: Any,
    new_batch_stats: Any,
    *,
    plan: EmaPlan | None,
    grad_accum_steps: int,
) -> tuple[Any, Any]:
    """The EMA weights (and statistics) after this micro-step: they advance once per update."""
    if state.ema_params is None:
        return None, None
    if plan is None:
        # Raised while tracing: a caller that keeps EMA weights must say how they advance.
        raise ValueError(
            "The state keeps EMA weights but make_train_step got no ema plan; pass "
            "ema=run_plan.ema (cnn_flax.training.run_plan.make_run_plan)."
        )
    update = state.step // grad_accum_steps
    ema = optim.ema_step(state.ema_params, new_params, update, plan)
    stats = state.ema_batch_stats
    if stats is not None:
        stats = optim.ema_step(stats, new_batch_stats, update, plan)
    if grad_accum_steps > 1:  # average once per optimizer update, not per micro-batch
        at_update = (state.step + 1) % grad_accum_steps == 0
        ema = optim.select_tree(at_update, ema, state.ema_params)
        if stats is not None:
            stats = optim.select_tree(at_update, stats, state.ema_batch_stats)
    return ema, stats


def make_eval_step(
    model: nn.Module,
    *,
    config: ml_collections.ConfigDict,
    num_classes: int,
) -> Callable[[dict, Batch], Metrics]:
    """Builds the pure eval step ``(variables, batch) -> metrics``.

    ``batch["mask"]`` marks real examples; padding examples (the last, partial batch) count for
    nothing, so every example of the split is counted exactly once. Metrics: ``loss``, ``top1``,
    ``top5`` as (sum, count), ``count`` being the number of real examples.
    """
    from cnn_flax.data.mixing import normalize
    from cnn_flax.training import losses

    dtype = compute_dtype(config.dtype)
    mean, std = tuple(config.data.mean), tuple(config.data.std)
    top_k = min(5, num_classes)

    def eval_step(variables: dict, batch: Batch) -> Metrics:
        images = normalize(batch["image"], mean=mean, std=std, dtype=dtype)
        logits = model.apply(variables, images, train=False).astype(jnp.float32)
        labels, mask = batch["label"], batch["mask"]
        targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
        return {
            "loss": losses.cross_entropy(logits, targets, label_smoothing=0.0, mask=mask),
            "top1": losses.topk_correct(logits, labels, k=1, mask=mask),
            "top5": losses.topk_correct(logits, labels, k=top_k, mask=mask),
        }

    return eval_step
