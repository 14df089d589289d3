"""Optimisers, learning-rate schedules, weight EMA and float16 loss scaling, from the config.

Everything is built from ``config.optimizer`` and ``config.schedule`` (see
:mod:`cnn_flax.configs.base`):

* Peak learning rate = ``optimizer.lr * batch_size / 256`` (the linear scaling rule of Goyal et
  al. 2017, "Accurate, Large Minibatch SGD"), or ``optimizer.lr`` when ``lr_scaling == "none"``.
* ``steps_per_epoch`` and ``total_steps`` count optimiser UPDATES, one per ``batch_size``
  examples. With ``grad_accum_steps = k`` the trainer feeds ``k`` micro-batches of
  ``batch_size // k`` per update and :class:`optax.MultiSteps` applies the update on the k-th.
* Weight decay is the coupled L2 term of the reference frameworks (added to the gradient before
  momentum, as PyTorch's SGD and TF's ``l2_loss``) for sgd and rmsprop, and decoupled for adamw,
  lars and lamb, as those optimisers are defined.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import chex
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any

# ----------------------------------------------------------------------------- schedules


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
    """``optimizer.lr`` scaled to ``batch_size`` (linear rule) unless ``lr_scaling == "none"``."""
    scaling = config.optimizer.lr_scaling
    if scaling == "linear":
        return config.optimizer.lr * config.batch_size / 256
    if scaling == "none":
        return config.optimizer.lr
    raise ValueError(f"optimizer.lr_scaling={scaling!r} is unknown; use 'linear' or 'none'.")


def _schedule_steps_per_epoch(
    config: ml_collections.ConfigDict, *, steps_per_epoch: int, total_steps: int
) -> float:
    """Steps per schedule epoch: ``total_steps / num_epochs`` when ``total_steps`` is set.

    Setting ``total_steps`` thereby compresses the whole schedule (warm-up, boundaries, decay
    periods) instead of cutting it off, so a short run keeps the recipe's shape.
    """
    if config.get("total_steps") is not None and config.num_epochs and config.num_epochs > 0:
        return total_steps / config.num_epochs
    return float(steps_per_epoch)


def create_learning_rate_schedule(
    config: ml_collections.ConfigDict, *, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """The learning rate at each optimiser step: linear warm-up, then the named decay.

    Schedules (``config.schedule.name``), with ``w`` warm-up steps, ``T`` total steps and ``p`` the
    peak rate:

    * ``cosine``: half cosine from ``p`` at ``w`` to ``p * end_lr_factor`` at ``T`` (Loshchilov
      and Hutter 2017, "SGDR", without restarts).
    * ``linear``: straight line from ``p`` at ``w`` to ``p * end_lr_factor`` at ``T``.
    * ``step``: ``p * decay_factor ** (number of boundaries_epochs passed)``; boundaries count
      from step 0 (He et al. 2016; torchvision's StepLR).
    * ``exponential``: ``p * decay_rate ** (step / decay_steps)`` (floored when ``staircase``),
      counted from step 0 as ``tf.train.exponential_decay`` in the TF TPU reference recipes
      (MnasNet, EfficientNet).
    * ``constant``: ``p``.

    Args:
      config: the full training config.
      steps_per_epoch: optimiser updates per epoch.
      total_steps: optimiser updates of the whole run.

    Returns:
      An ``optax.Schedule`` (jit-compatible function of the step).
    """
    sched = config.schedule
    peak = peak_learning_rate(config)
    spe = _schedule_steps_per_epoch(
        config, steps_per_epoch=steps_per_epoch, total_steps=total_steps
    )
    warmup = int(round(sched.warmup_epochs * spe))
    if warmup > total_steps:
        raise ValueError(
            f"schedule.warmup_epochs={sched.warmup_epochs} is {warmup} steps, more than the "
            f"{total_steps} total steps; shorten the warm-up or train longer."
        )
    init = peak * sched.warmup_init_factor
    end = peak * sched.end_lr_factor
    name = sched.name

    if name == "cosine":
        decay_len = max(total_steps - warmup, 1)

        def main(step):
            t = jnp.clip((step - warmup) / decay_len, 0.0, 1.0)
            return end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))

    elif name == "linear":
        decay_len = max(total_steps - warmup, 1)

        def main(step):
            t = jnp.clip((step - warmup) / decay_len, 0.0, 1.0)
            return peak + (end - peak) * t

    elif name == "step":
        boundaries = [int(round(b * spe)) for b in sched.boundaries_epochs]
        factor = sched.decay_factor

        def main(step):
            passed = sum((step >= b).astype(jnp.float32) for b in boundaries)
            return peak * jnp.power(factor, passed)

    elif name == "exponential":
        decay_steps = sched.decay_epochs * spe
        if decay_steps <= 0:
            raise ValueError(f"schedule.decay_epochs={sched.decay_epochs} must be positive.")
        rate = sched.decay_rate
        staircase = sched.staircase

        def main(step):
            periods = step / decay_steps
            if staircase:
                periods = jnp.floor(periods)
            return peak * jnp.power(rate, periods)

    elif name == "constant":

        def main(step):
            return jnp.full_like(step, peak)

    else:
        raise ValueError(
            f"schedule.name={name!r} is unknown; use cosine, step, linear, exponential or constant."
        )

    shape = sched.get("warmup_shape", "linear")
    if shape not in ("linear", "constant"):
        raise ValueError(f"schedule.warmup_shape={shape!r} is unknown; use linear or constant.")

    def schedule(step: chex.Numeric) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        lr = main(step)
        if warmup > 0:
            ramp = init + (peak - init) * step / warmup if shape == "linear" else init
            lr = jnp.where(step < warmup, ramp, lr)
        return lr

    return schedule


# ----------------------------------------------------------------------------- weight decay


def _leaf_name(path: tuple) -> str:
    last = path[-1] if path else None
    for attr in ("key", "name", "idx"):
        if hasattr(last, attr):
            return str(getattr(last, attr))
    return str(last)


def no_bn_bias_mask(params: PyTree) -> PyTree:
    """``True`` for parameters that get weight decay: everything but biases and norm parameters.

    A leaf is excluded when its name is ``"bias"`` or ``"scale"`` (Flax's Dense/Conv bias and
    BatchNorm/LayerNorm scale and bias) or when it has ``ndim <= 1`` (any other vector, e.g. a
    custom affine). Decaying those only hurts (Goyal et al. 2017, section 5.1; He et al. 2019,
    "Bag of Tricks", "no bias decay").
    """

    def decays(path, leaf) -> bool:
        return _leaf_name(path) not in ("bias", "scale") and jnp.ndim(leaf) > 1

    return jax.tree_util.tree_map_with_path(decays, params)


def kernels_mask(params: PyTree) -> PyTree:
    """``True`` only for convolution and dense kernels (leaves named ``"kernel"``).

    Everything else keeps its value under decay: biases, norm parameters, and the learned
    embeddings, class tokens and layer scales of Transformers and ConvNeXt, as the ViT and
    ConvNeXt recipes of big_vision and timm decay only weight matrices.
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) == "kernel", params)


WEIGHT_DECAY_MASKS = ("no_bn_bias", "kernels", "all")


def weight_decay_mask(config: ml_collections.ConfigDict) -> Callable[[PyTree], PyTree] | None:
    """The mask function for ``optimizer.weight_decay_mask`` (``None`` means decay everything)."""
    kind = config.optimizer.weight_decay_mask
    if kind == "no_bn_bias":
        return no_bn_bias_mask
    if kind == "kernels":
        return kernels_mask
    if kind == "all":
        return None
    raise ValueError(
        f"optimizer.weight_decay_mask={kind!r} is unknown; use one of {WEIGHT_DECAY_MASKS}."
    )


# ----------------------------------------------------------------------------- optimisers


def tf_rmsprop(
    learning_rate: optax.ScalarOrSchedule,
    *,
    decay: float = 0.9,
    eps: float = 1e-3,
    momentum: float = 0.9,
    initial_scale: float = 1.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
) -> optax.GradientTransformation:
    """RMSProp as ``tf.compat.v1.train.RMSPropOptimizer`` computes it.

    ``ms = decay * ms + (1 - decay) * g**2``, ``mom = momentum * mom + lr * g / sqrt(ms + eps)``,
    ``w -= mom``. The learning rate sits INSIDE the momentum buffer (optax's ``rmsprop`` applies
    it after), which matters while it changes; ``ms`` starts at ``initial_scale`` (TF: 1.0).
    Used by the MnasNet/MobileNetV3/EfficientNet TPU reference recipes.
    """
    if centered:
        rms = optax.scale_by_stddev(decay=decay, eps=eps, initial_scale=initial_scale)
    else:
        rms = optax.scale_by_rms(
            decay=decay, eps=eps, initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt
        )
    parts = [rms, optax.scale_by_learning_rate(learning_rate)]
    if momentum:
        parts.append(optax.trace(decay=momentum, nesterov=False))
    return optax.chain(*parts)


def _base_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    opt = config.optimizer
    mask = weight_decay_mask(config)
    wd = opt.weight_decay
    momentum = opt.momentum or None
    name = opt.name
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(wd, mask),
            optax.sgd(schedule, momentum=momentum, nesterov=opt.nesterov),
        )
    if name == "rmsprop":
        return optax.chain(
            optax.add_decayed_weights(wd, mask),
            tf_rmsprop(
                schedule,
                decay=opt.rmsprop_decay,
                eps=opt.eps,
                momentum=opt.momentum,
                initial_scale=opt.rmsprop_initial_scale,
                eps_in_sqrt=opt.tf_style_eps,
                centered=opt.rmsprop_centered,
            ),
        )
    if name == "adamw":
        return optax.adamw(
            schedule,
            b1=opt.b1,
            b2=opt.b2,
            eps=opt.eps,
            weight_decay=wd,
            mask=mask,
            nesterov=opt.nesterov,
        )
    if name == "lars":
        mask_or_all = mask if mask is not None else True
        return optax.lars(
            schedule,
            weight_decay=wd,
            weight_decay_mask=mask_or_all,
            trust_coefficient=opt.trust_coefficient,
            eps=opt.eps,
            trust_ratio_mask=mask_or_all,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
        )
    if name == "lamb":
        return optax.lamb(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=wd, mask=mask)
    raise ValueError(f"optimizer.name={name!r} is unknown; use sgd, adamw, rmsprop, lars or lamb.")


# ----------------------------------------------------------------------------- parameter groups

# The classifier's subtree, which every model has at the top of its parameters (the model
# contract); fine-tuning trains it differently from the rest (the "backbone").
HEAD = "head"
TRAINABLE = ("all", "head")


def param_groups(params: PyTree) -> dict[str, str]:
    """``"head"`` or ``"backbone"`` per top-level subtree (a label prefix for optax)."""
    return {key: HEAD if key == HEAD else "backbone" for key in params}


def trainable_part(config: ml_collections.ConfigDict) -> str:
    """``finetune.trainable`` (``"all"``, or ``"head"`` for a linear probe), checked."""
    finetune = config.get("finetune")
    trainable = "all" if finetune is None else finetune.trainable
    if trainable not in TRAINABLE:
        raise ValueError(f"finetune.trainable={trainable!r} is not one of {TRAINABLE}.")
    return trainable


def stop_frozen_gradients(params: PyTree, config: ml_collections.ConfigDict) -> PyTree:
    """``params`` with the backbone behind ``stop_gradient`` for a linear probe, else as is.

    The gradients of frozen parameters are then zeros without being computed: XLA drops the
    backward pass through the backbone, which is most of a probe's cost.
    """
    if trainable_part(config) == "all":
        return params
    return {k: v if k == HEAD else jax.lax.stop_gradient(v) for k, v in params.items()}


def _with_param_groups(
    tx: optax.GradientTransformation, config: ml_collections.ConfigDict
) -> optax.GradientTransformation:
    """A linear probe updates only the head; otherwise the backbone's updates are scaled by
    ``finetune.backbone_lr_mult``, which is its learning rate relative to the head's (every
    update rule here is linear in the learning rate, which is applied last)."""
    finetune = config.get("finetune")
    if finetune is None:
        return tx
    if trainable_part(config) == "head":
        return optax.multi_transform({HEAD: tx, "backbone": optax.set_to_zero()}, param_groups)
    mult = float(finetune.backbone_lr_mult)
    if not 0.0 <= mult <= 1e3:
        raise ValueError(f"finetune.backbone_lr_mult={mult} must be in [0, 1000].")
    if mult == 1.0:
        return tx
    backbone = optax.set_to_zero() if mult == 0.0 else optax.scale(mult)
    return optax.chain(
        tx, optax.multi_transform({HEAD: optax.identity(), "backbone": backbone}, param_groups)
    )


def create_optimizer(
    config: ml_collections.ConfigDict, *, steps_per_epoch: int, total_steps: int
) -> optax.GradientTransformation:
    """The full optimiser: clipping, (masked) weight decay, update rule, schedule, parameter
    groups (fine-tuning), accumulation.

    Args:
      config: the full training config.
      steps_per_epoch: optimiser updates per epoch (``num_train // batch_size``).
      total_steps: optimiser updates of the whole run.

    Returns:
      An ``optax.GradientTransformation``. With ``grad_accum_steps = k > 1`` it is an
      ``optax.MultiSteps`` that must be called once per micro-batch: it averages ``k`` gradients
      and returns zero updates in between.
    """
    schedule = create_learning_rate_schedule(
        config, steps_per_epoch=steps_per_epoch, total_steps=total_steps
    )
    parts = []
    if config.get("clip_grad_norm") is not None:
        parts.append(optax.clip_by_global_norm(config.clip_grad_norm))
    parts.append(_base_optimizer(config, schedule))
    tx = optax.chain(*parts) if len(parts) > 1 else parts[0]
    tx = _with_param_groups(tx, config)
    k = config.get("grad_accum_steps", 1)
    if k < 1:
        raise ValueError(f"grad_accum_steps={k} must be >= 1.")
    if k > 1:
        if config.batch_size % k:
            raise ValueError(
                f"batch_size={config.batch_size} is not divisible by grad_accum_steps={k}."
            )
        tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
    return tx


# ----------------------------------------------------------------------------- EMA


def ema_decay_at(step: chex.Numeric, decay: float, *, warmup: bool) -> jax.Array:
    """EMA decay at ``step``; with ``warmup``, ``min(decay, (1 + step) / (10 + step))``.

    The warm-up is ``tf.train.ExponentialMovingAverage(num_updates=step)``'s, used by the TF
    reference recipes so early averages do not remember the random initialisation for long.
    """
    decay = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_params: PyTree, params: PyTree, decay: chex.Numeric) -> PyTree:
    """One exponential-moving-average step: ``decay * ema + (1 - decay) * params`` (pure)."""
    return jax.tree.map(
        lambda e, p: (decay * e + (1.0 - decay) * p.astype(e.dtype)).astype(e.dtype),
        ema_params,
        params,
    )


# ----------------------------------------------------------------------------- loss scaling


@flax.struct.dataclass
class DynamicLossScale:
    """float16 dynamic loss scale (Micikevicius et al. 2018, "Mixed Precision Training").

    The loss is multiplied by ``scale`` before differentiation so small float16 gradients do not
    underflow. After a step with non-finite gradients the step is skipped and the scale divided
    by ``factor``; after ``growth_interval`` finite steps in a row it is multiplied by ``factor``.
    A pytree: carry it in the train state.
    """

    scale: jax.Array
    finite_steps: jax.Array
    growth_interval: int = flax.struct.field(pytree_node=False, default=2000)
    factor: float = flax.struct.field(pytree_node=False, default=2.0)
    min_scale: float = flax.struct.field(pytree_node=False, default=1.0)


def init_loss_scale(
    initial: float = 2.0**15, *, growth_interval: int = 2000, factor: float = 2.0
) -> DynamicLossScale:
    """A fresh :class:`DynamicLossScale` (``config.loss_scale.initial``/``growth_interval``)."""
    return DynamicLossScale(
        scale=jnp.asarray(initial, jnp.float32),
        finite_steps=jnp.zeros((), jnp.int32),
        growth_interval=growth_interval,
        factor=factor,
    )


def scale_loss(loss_scale: DynamicLossScale, loss: jax.Array) -> jax.Array:
    """``loss * scale`` (differentiate this one)."""
    return loss * loss_scale.scale.astype(loss.dtype)


def unscale_grads(loss_scale: DynamicLossScale, grads: PyTree) -> PyTree:
    """Gradients of the scaled loss divided back by the scale, in float32."""
    inv = 1.0 / loss_scale.scale
    return jax.tree.map(lambda g: g.astype(jnp.float32) * inv, grads)


def all_finite(tree: PyTree) -> jax.Array:
    """Scalar bool: every element of every leaf is finite."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).all()


def adjust_loss_scale(loss_scale: DynamicLossScale, finite: jax.Array) -> DynamicLossScale:
    """The next step's scale: shrink on overflow, grow after ``growth_interval`` good steps."""
    steps = loss_scale.finite_steps + 1
    grow = steps >= loss_scale.growth_interval
    grown = jnp.where(grow, loss_scale.scale * loss_scale.factor, loss_scale.scale)
    shrunk = jnp.maximum(loss_scale.scale / loss_scale.factor, loss_scale.min_scale)
    return loss_scale.replace(
        scale=jnp.where(finite, grown, shrunk),
        finite_steps=jnp.where(finite & ~grow, steps, 0).astype(jnp.int32),
    )


def select_tree(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """``on_true`` where the scalar ``pred`` holds, else ``on_false`` (e.g. skip a bad step)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def steps_for_epochs(num_epochs: float, steps_per_epoch: int) -> int:
    """``ceil(num_epochs * steps_per_epoch)``: optimiser updates in ``num_epochs`` epochs."""
    return int(math.ceil(num_epochs * steps_per_epoch - 1e-9))


def total_steps(config: ml_collections.ConfigDict, *, steps_per_epoch: int) -> int:
    """``config.total_steps`` if set, else ``num_epochs`` worth of updates."""
    if config.get("total_steps") is not None:
        return int(config.total_steps)
    return steps_for_epochs(config.num_epochs, steps_per_epoch)
