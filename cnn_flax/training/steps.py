"""Pure train and eval steps, compiled once with ``jax.jit`` over the data-parallel mesh.

Both steps take uint8 images straight from the input pipeline and normalise them on device
(4x less host-to-device traffic than float32), and return metrics as ``(sum, count)`` pairs of
float32 scalars, reduced over the whole global batch inside the step. The host adds the pairs
up and divides only when it logs, so no step ever waits for the device.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from cnn_flax.data.mixing import augment_batch, normalize
from cnn_flax.models import layers
from cnn_flax.training import losses, optim
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


@dataclasses.dataclass(frozen=True)
class OnDeviceAugment:
    """``config.data.augment``'s on-device part (:func:`cnn_flax.data.mixing.augment_batch`)."""

    random_erasing: float
    random_erasing_noise: bool
    mixup_alpha: float
    cutmix_alpha: float


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What the train step takes from the config, read once before tracing: nothing inside the
    jitted step looks at the ``ConfigDict``.

    Attributes:
      dtype: the compute dtype (``config.dtype``).
      mean: per-channel mean on the 0-255 scale (``data.mean``).
      std: per-channel standard deviation on the 0-255 scale (``data.std``).
      seed: the run's seed; a step's randomness is ``fold_in(key(seed), step)``.
      label_smoothing: of the cross-entropy.
      aux_loss_weight: of the auxiliary heads' losses (GoogLeNet, Inception v3).
      head_only: a linear probe (``finetune.trainable="head"``): gradients reach the head alone.
      augment: random erasing, mixup and CutMix.
    """

    dtype: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    seed: int
    label_smoothing: float
    aux_loss_weight: float
    head_only: bool
    augment: OnDeviceAugment

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> StepSettings:
        """The settings of a checked training config."""
        augment = config.data.augment
        return cls(
            dtype=compute_dtype(config.dtype),
            mean=tuple(config.data.mean),
            std=tuple(config.data.std),
            seed=int(config.seed),
            label_smoothing=float(config.label_smoothing),
            aux_loss_weight=float(config.aux_loss_weight),
            head_only=optim.trainable_part(config) == "head",
            augment=OnDeviceAugment(
                random_erasing=float(augment.random_erasing),
                random_erasing_noise=bool(augment.random_erasing_noise),
                mixup_alpha=float(augment.mixup_alpha),
                cutmix_alpha=float(augment.cutmix_alpha),
            ),
        )


def make_loss(model: nn.Module, settings: StepSettings) -> Callable:
    """The differentiated loss ``(params, batch_stats, images, targets, dropout_rng, loss_scale)
    -> (scaled total, (loss, logits, new batch_stats))``.

    The total adds the auxiliary heads' losses (weighted) to the main one and is multiplied by
    the float16 loss scale when there is one; ``loss`` is the main head's, for the metrics.
    """
    smoothing, aux_weight = settings.label_smoothing, settings.aux_loss_weight

    def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
        total, count = losses.cross_entropy(
            logits.astype(jnp.float32), targets, label_smoothing=smoothing
        )
        return total / count

    def loss_fn(params, batch_stats, images, targets, dropout_rng, loss_scale):
        if settings.head_only:
            params = optim.freeze_backbone(params)
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
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
        loss = cross_entropy(logits, targets)
        total = loss
        for aux_logits in aux:
            total = total + aux_weight * cross_entropy(aux_logits, targets)
        if loss_scale is not None:
            total = optim.scale_loss(loss_scale, total)
        return total, (loss, logits, updates.get("batch_stats", {}))

    return loss_fn


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

    Top to bottom: normalise and augment the batch, differentiate :func:`make_loss`, update
    the weights, advance the EMA (:func:`_advance_ema`), undo a float16 overflow
    (:func:`_skip_overflow`), and count (:func:`_train_metrics`). Randomness (dropout, drop
    path, random erasing, mixup/cutmix) comes from ``fold_in(key(seed), step)``, so a resumed
    run draws exactly the numbers an uninterrupted one would.

    Args:
      model: the Flax module (BatchNorm mode already chosen through its ``norm`` field).
      tx: the optax optimizer (from ``cnn_flax.training.optim.create_optimizer``).
      config: the training config, checked; read once, into :class:`StepSettings`.
      num_classes: classifier outputs, for one-hot labels.
      learning_rate_fn: schedule evaluated for the ``lr`` metric (optional).
      grad_accum_steps: micro-steps per optimizer update (``RunPlan.grad_accum_steps``): the
        EMA and the ``lr`` metric advance once per update.
      ema: the weight EMA's plan (``RunPlan.ema``); required when the state carries EMA weights.
    """
    settings = StepSettings.from_config(config)
    loss_fn = make_loss(model, settings)
    base_key = jax.random.key(settings.seed)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        mix_rng, dropout_rng = jax.random.split(jax.random.fold_in(base_key, state.step))
        images = normalize(
            batch["image"], mean=settings.mean, std=settings.std, dtype=settings.dtype
        )
        targets = jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)
        # Random erasing per image, then mixup / CutMix (each a no-op when off).
        images, targets = augment_batch(mix_rng, images, targets, settings.augment)
        grads, (loss, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, images, targets, dropout_rng, state.loss_scale
        )
        if state.loss_scale is not None:
            grads = optim.unscale_grads(state.loss_scale, grads)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params, ema_stats = _advance_ema(
            state, params, batch_stats, plan=ema, grad_accum_steps=grad_accum_steps
        )
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            ema_params=ema_params,
            ema_batch_stats=ema_stats,
        )
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if state.loss_scale is not None:
            new_state = _skip_overflow(state, new_state, grads)
            finite = jnp.isfinite(loss)  # an overflowing gradient is expected now and then
        metrics = _train_metrics(
            new_state,
            loss=loss,
            logits=logits,
            labels=batch["label"],
            grad_norm=grad_norm,
            finite=finite,
        )
        if learning_rate_fn is not None:
            metrics["lr"] = _pair(learning_rate_fn(state.step // grad_accum_steps))
        if new_state.loss_scale is not None:
            metrics["loss_scale"] = _pair(new_state.loss_scale.scale)
        return new_state, metrics

    return train_step


def _skip_overflow(old: TrainState, new: TrainState, grads: Any) -> TrainState:
    """The float16 guard: a step whose gradients overflowed keeps the old state (weights,
    optimiser, statistics, EMA) and shrinks the loss scale; a finite one may grow it."""
    grads_finite = optim.all_finite(grads)
    keep = functools.partial(optim.select_tree, grads_finite)
    return new.replace(
        params=keep(new.params, old.params),
        opt_state=keep(new.opt_state, old.opt_state),
        batch_stats=keep(new.batch_stats, old.batch_stats),
        ema_params=None if new.ema_params is None else keep(new.ema_params, old.ema_params),
        ema_batch_stats=(
            None if new.ema_batch_stats is None else keep(new.ema_batch_stats, old.ema_batch_stats)
        ),
        loss_scale=optim.adjust_loss_scale(old.loss_scale, grads_finite),
    )


def _train_metrics(
    state: TrainState,
    *,
    loss: jax.Array,
    logits: jax.Array,
    labels: jax.Array,
    grad_norm: jax.Array,
    finite: jax.Array,
) -> Metrics:
    """The step's (sum, count) pairs: loss, accuracy, gradient norm and the non-finite flags of
    the loss and of every part of the new state."""
    correct, count = losses.topk_correct(logits.astype(jnp.float32), labels, k=1)
    metrics: Metrics = {
        "loss": (loss * count, count),
        "accuracy": (correct, count),
        "grad_norm": _pair(grad_norm),
        NONFINITE: _pair(~finite),  # the loss or the gradient norm
    }
    parts = {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "ema_params": state.ema_params,
        "ema_batch_stats": state.ema_batch_stats,
    }
    return metrics | state_finiteness(parts)


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
