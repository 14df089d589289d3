"""Optimisers, learning-rate schedules, weight EMA and float16 loss scaling, from the config.

Everything is built from ``config.optimizer`` and ``config.schedule`` (see
:mod:`cnn_flax.configs.base`):

* Peak learning rate = ``optimizer.lr * batch_size / 256`` (the linear scaling rule of Goyal et
  al. 2017, "Accurate, Large Minibatch SGD"), or ``optimizer.lr`` when ``lr_scaling == "none"``.
* Steps are counted in optimiser UPDATES, one per ``batch_size`` examples (the
  :class:`.run_plan.RunPlan`). With ``grad_accum_steps = k`` the trainer feeds ``k``
  micro-batches of ``batch_size // k`` per update and :class:`optax.MultiSteps` applies the
  update on the k-th.
* The names each field accepts are the keys of this module's tables (``OPTIMIZERS``,
  ``SCHEDULES``, ...); :mod:`.config_checks` refuses any other before this code runs.
* Weight decay is the coupled L2 term of the reference frameworks (added to the gradient before
  momentum, as PyTorch's SGD and TF's ``l2_loss``) for sgd and rmsprop, and decoupled for adamw,
  lars and lamb, as those optimisers are defined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from cnn_flax.training.run_plan import EmaPlan, RunPlan

PyTree = Any

# ----------------------------------------------------------------------------- schedules

LR_SCALINGS = ("linear", "none")
WARMUP_SHAPES = ("linear", "constant")


def peak_learning_rate(config: ml_collections.ConfigDict, plan: RunPlan) -> float:
    """``optimizer.lr`` scaled to the global batch (linear rule) unless ``lr_scaling == "none"``."""
    if config.optimizer.lr_scaling == "none":
        return config.optimizer.lr
    return config.optimizer.lr * plan.global_batch / 256


def _cosine(sched, *, peak: float, end: float, warmup: int, total: int, spe: float):
    decay_len = max(total - warmup, 1)

    def main(step):
        t = jnp.clip((step - warmup) / decay_len, 0.0, 1.0)
        return end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))

    return main


def _linear(sched, *, peak: float, end: float, warmup: int, total: int, spe: float):
    decay_len = max(total - warmup, 1)

    def main(step):
        t = jnp.clip((step - warmup) / decay_len, 0.0, 1.0)
        return peak + (end - peak) * t

    return main


def _step(sched, *, peak: float, end: float, warmup: int, total: int, spe: float):
    boundaries = [int(round(b * spe)) for b in sched.boundaries_epochs]
    factor = sched.decay_factor

    def main(step):
        passed = sum((step >= b).astype(jnp.float32) for b in boundaries)
        return peak * jnp.power(factor, passed)

    return main


def _exponential(sched, *, peak: float, end: float, warmup: int, total: int, spe: float):
    decay_steps = sched.decay_epochs * spe
    rate = sched.decay_rate
    staircase = sched.staircase

    def main(step):
        periods = step / decay_steps
        if staircase:
            periods = jnp.floor(periods)
        return peak * jnp.power(rate, periods)

    return main


def _constant(sched, *, peak: float, end: float, warmup: int, total: int, spe: float):
    def main(step):
        return jnp.full_like(step, peak)

    return main


# schedule.name -> the decay after the warm-up.
_SCHEDULES = {
    "cosine": _cosine,
    "step": _step,
    "linear": _linear,
    "exponential": _exponential,
    "constant": _constant,
}
SCHEDULES = tuple(_SCHEDULES)


def create_learning_rate_schedule(
    config: ml_collections.ConfigDict, plan: RunPlan
) -> optax.Schedule:
    """The learning rate at each optimiser update: linear warm-up, then the named decay.

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

    Epoch-valued fields are converted with ``plan.schedule_steps_per_epoch``. After a change
    of batch size the update count is shifted by ``plan.schedule_offset``, so the schedule stays
    the same function of the images seen (its peak follows the new batch by the linear rule).

    Args:
      config: the full training config, checked by :func:`.config_checks.check_config`.
      plan: the run's step arithmetic (:func:`cnn_flax.training.run_plan.make_run_plan`).

    Returns:
      An ``optax.Schedule`` (jit-compatible function of the update count).
    """
    sched = config.schedule
    peak = peak_learning_rate(config, plan)
    spe = plan.schedule_steps_per_epoch
    warmup = plan.warmup_steps
    init = peak * sched.warmup_init_factor
    main = _SCHEDULES[sched.name](
        sched,
        peak=peak,
        end=peak * sched.end_lr_factor,
        warmup=warmup,
        # After a change of batch size: the run's end in updates of the new batch from image 0.
        total=plan.total_steps + plan.schedule_offset if plan.schedule_offset else plan.total_steps,
        spe=spe,
    )
    offset = plan.schedule_offset
    linear_warmup = sched.warmup_shape == "linear"

    def schedule(step: chex.Numeric) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        if offset:  # resumed with another batch size: the same point in images
            step = step + offset
        lr = main(step)
        if warmup > 0:
            ramp = init + (peak - init) * step / warmup if linear_warmup else init
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


# The parameters of a Flax norm layer (BatchNorm, LayerNorm, GroupNorm and GroupBatchNorm all
# name theirs so); a module holding anything else (a kernel, a layer scale) is not a norm layer.
_NORM_LEAVES = frozenset({"scale", "bias"})


def no_norm_mask(params: PyTree) -> PyTree:
    """``True`` for every parameter but those of normalisation layers.

    torchvision's ``--norm-weight-decay 0.0`` (``set_weight_decay`` in its classification
    references, used by its V2 recipe, Vryniotis 2021): the parameters of BatchNorm, LayerNorm
    and GroupNorm modules get no decay; everything else, the biases of convolutions and dense
    layers included, does. A norm layer is a module whose parameters are all named ``scale`` or
    ``bias``, which is how Flax's norm layers (and :class:`cnn_flax.models.norm.GroupBatchNorm`)
    name theirs.
    """

    def mark(tree: Any) -> Any:
        if not isinstance(tree, dict):
            return True
        is_norm = bool(tree) and all(
            k in _NORM_LEAVES and not isinstance(v, dict) for k, v in tree.items()
        )
        if is_norm:
            return {k: False for k in tree}
        return {k: mark(v) for k, v in tree.items()}

    mask = mark(flax.core.unfreeze(params))
    return flax.core.freeze(mask) if isinstance(params, flax.core.FrozenDict) else mask


# optimizer.weight_decay_mask -> mask function (None: decay every parameter).
_WEIGHT_DECAY_MASKS: dict[str, Callable[[PyTree], PyTree] | None] = {
    "no_bn_bias": no_bn_bias_mask,
    "no_norm": no_norm_mask,
    "kernels": kernels_mask,
    "all": None,
}
WEIGHT_DECAY_MASKS = tuple(_WEIGHT_DECAY_MASKS)


def weight_decay_mask(config: ml_collections.ConfigDict) -> Callable[[PyTree], PyTree] | None:
    """The mask function for ``optimizer.weight_decay_mask`` (``None`` means decay everything)."""
    return _WEIGHT_DECAY_MASKS[config.optimizer.weight_decay_mask]


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


def _sgd(opt, schedule, mask) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(opt.weight_decay, mask),
        optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov),
    )


def _rmsprop(opt, schedule, mask) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(opt.weight_decay, mask),
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


def _adamw(opt, schedule, mask) -> optax.GradientTransformation:
    return optax.adamw(
        schedule,
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        mask=mask,
        nesterov=opt.nesterov,
    )


def _lars(opt, schedule, mask) -> optax.GradientTransformation:
    mask_or_all = mask if mask is not None else True
    return optax.lars(
        schedule,
        weight_decay=opt.weight_decay,
        weight_decay_mask=mask_or_all,
        trust_coefficient=opt.trust_coefficient,
        eps=opt.eps,
        trust_ratio_mask=mask_or_all,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
    )


def _lamb(opt, schedule, mask) -> optax.GradientTransformation:
    return optax.lamb(
        schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=mask
    )


# optimizer.name -> update rule.
_OPTIMIZERS = {"sgd": _sgd, "adamw": _adamw, "rmsprop": _rmsprop, "lars": _lars, "lamb": _lamb}
OPTIMIZERS = tuple(_OPTIMIZERS)


# ----------------------------------------------------------------------------- parameter groups

# The classifier's subtree, which every model has at the top of its parameters (the model
# contract); fine-tuning trains it differently from the rest (the "backbone").
HEAD = "head"
TRAINABLE = ("all", "head")


def param_groups(params: PyTree) -> dict[str, str]:
    """``"head"`` or ``"backbone"`` per top-level subtree (a label prefix for optax)."""
    return {key: HEAD if key == HEAD else "backbone" for key in params}


def trainable_part(config: ml_collections.ConfigDict) -> str:
    """``finetune.trainable``: ``"all"``, or ``"head"`` for a linear probe (checked with the rest
    of the config in :mod:`cnn_flax.training.config_checks`)."""
    finetune = config.get("finetune")
    return "all" if finetune is None else str(finetune.trainable)


def stop_frozen_gradients(params: PyTree, config: ml_collections.ConfigDict) -> PyTree:
    """``params`` with the backbone behind ``stop_gradient`` for a linear probe, else as is.

    The gradients of frozen parameters are then zeros without being computed: XLA drops the
    backward pass through the backbone, which is most of a probe's cost.
    """
    return params if trainable_part(config) == "all" else freeze_backbone(params)


def freeze_backbone(params: PyTree) -> PyTree:
    """``params`` with everything but the head behind ``stop_gradient``."""
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
    if mult == 1.0:
        return tx
    backbone = optax.set_to_zero() if mult == 0.0 else optax.scale(mult)
    return optax.chain(
        tx, optax.multi_transform({HEAD: optax.identity(), "backbone": backbone}, param_groups)
    )


def create_optimizer(
    config: ml_collections.ConfigDict, plan: RunPlan
) -> optax.GradientTransformation:
    """The full optimiser: clipping, (masked) weight decay, update rule, schedule, parameter
    groups (fine-tuning), accumulation.

    Args:
      config: the full training config, checked by :func:`.config_checks.check_config`.
      plan: the run's step arithmetic (:func:`cnn_flax.training.run_plan.make_run_plan`).

    Returns:
      An ``optax.GradientTransformation``. With ``plan.grad_accum_steps = k > 1`` it is an
      ``optax.MultiSteps`` that must be called once per micro-batch: it averages ``k`` gradients
      and returns zero updates in between.
    """
    schedule = create_learning_rate_schedule(config, plan)
    parts = []
    if config.clip_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(config.clip_grad_norm))
    opt = config.optimizer
    parts.append(_OPTIMIZERS[opt.name](opt, schedule, weight_decay_mask(config)))
    tx = optax.chain(*parts) if len(parts) > 1 else parts[0]
    tx = _with_param_groups(tx, config)
    if plan.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=plan.grad_accum_steps).gradient_transformation()
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


def ema_step(ema: PyTree, new: PyTree, update: chex.Numeric, plan: EmaPlan) -> PyTree:
    """The average after optimiser update ``update`` (0-based) produced the weights ``new``.

    Follows ``plan`` (:class:`.run_plan.EmaPlan`): unchanged unless the update's index
    within its data epoch is a multiple of ``plan.every``; a plain copy of ``new`` through
    ``plan.copy_through``; else :func:`ema_update` with ``plan.decay`` (TF's warm-up applied
    when ``plan.tf_warmup``). ``ema`` and ``new`` may hold BatchNorm statistics as well as
    parameters: torchvision averages both alike.
    """
    update = jnp.asarray(update, jnp.int32)
    due = (update % plan.steps_per_epoch) % plan.every == 0
    decay = ema_decay_at(update, plan.decay, warmup=plan.tf_warmup)
    averaged = ema_update(ema, new, decay)
    if plan.copy_through >= 0:
        copied = jax.tree.map(lambda e, p: p.astype(e.dtype), ema, new)
        averaged = select_tree(update <= plan.copy_through, copied, averaged)
    return select_tree(due, averaged, ema)


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
