"""BatchNorm running statistics re-estimated on training images, before an evaluation.

A BatchNorm's running statistics are an exponential average (momentum ``m``) of its batch
statistics, so after ``t`` updates they still hold ``m^t`` of their starting values: 22% after
150 steps at ``m = 0.99`` (issue 18's finetune study). Short runs,
fine-tuning with BatchNorm unfrozen and any run whose weights moved quickly are then evaluated
with statistics that describe neither the current weights nor the data. The remedy is the one
of SWA (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima", sec. 3.2) and of
``torch.optim.swa_utils.update_bn`` and timm: with the weights fixed, run training images
through the model in train mode and replace each running statistic by the plain (cumulative,
equally weighted) average of its batch statistics, not by the momentum average.

The batch statistics are read without touching the model: each batch runs from zeroed running
statistics, so the model's own update ``m * 0 + (1 - m) * batch`` leaves ``(1 - m)`` times the
batch statistic, divided back by the layer's momentum (read off the layer by a method
interceptor). The variance is what the layer keeps for evaluation: torch's unbiased batch
variance for :class:`cnn_flax.models.norm.BatchNorm` (its default), the biased one for Flax's
convention, so the re-estimate follows the run's own convention. Layers that do not update their
statistics in train mode (:class:`~cnn_flax.models.norm.FrozenBatchNorm`, a frozen fine-tune)
keep theirs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from cnn_flax.models.norm import FrozenBatchNorm

PyTree = Any


def _momenta(model: nn.Module, variables: dict, images: jax.Array) -> dict[tuple[str, ...], float]:
    """The momentum of every BatchNorm that updates its statistics in train mode, by the path of
    its statistics in ``batch_stats``."""
    found: dict[tuple[str, ...], float] = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if (
            context.method_name == "__call__"
            and isinstance(module, nn.BatchNorm)
            and not isinstance(module, FrozenBatchNorm)
        ):
            given = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
            running = module.use_running_average if given is None else given
            if not running:
                found[tuple(module.path)] = float(module.momentum)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda v, x: model.apply(
                v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
            ),
            variables,
            images,
        )
    return found


def reestimate_batch_stats(
    model: nn.Module,
    variables: dict,
    batches: Iterable[jax.Array],
    *,
    num_batches: int | None = None,
) -> PyTree:
    """BatchNorm statistics of ``variables`` re-estimated on ``batches`` of model inputs.

    Args:
      model: the Flax module (its ``apply(..., train=True, mutable=["batch_stats"])`` is run).
      variables: ``{"params", "batch_stats"}``; the weights are not changed.
      batches: model inputs (already normalised as the model expects them), e.g. training
        images; iterated until exhausted or ``num_batches`` are used.
      num_batches: use at most this many batches (an infinite iterator needs it).

    Returns:
      The new ``batch_stats``: each re-estimated ``mean`` and ``var`` the equally weighted average
      of the layer's batch statistics over the batches (``torch.optim.swa_utils.update_bn``'s
      ``momentum=None``), every other statistic unchanged. ``variables["batch_stats"]`` itself
      when the model has no BatchNorm that updates in train mode.

    Raises:
      ValueError: ``batches`` yields nothing, or a layer's momentum is 1 (it never learns from a
        batch, so its batch statistics cannot be read).
    """
    stats = variables.get("batch_stats") or {}
    iterator = iter(batches)
    first = next(iterator, None) if num_batches != 0 else None
    if first is None:
        raise ValueError("reestimate_batch_stats needs at least one batch of images.")
    if not stats:
        return stats
    momenta = _momenta(model, variables, first)
    if not momenta:
        return stats
    flat = traverse_util.flatten_dict(stats)
    scale = {}
    for key in flat:
        momentum = momenta.get(key[:-1])
        if momentum is None:
            continue
        if momentum >= 1.0:
            raise ValueError(
                f"BatchNorm {'/'.join(key[:-1])} has momentum {momentum}: it never updates its "
                "statistics, so they cannot be re-estimated."
            )
        scale[key] = 1.0 / (1.0 - momentum)
    batch_moments = _batch_moments_fn(model, tuple(sorted(scale.items())))
    zeroed = {k: jnp.zeros_like(v) for k, v in flat.items()}
    zeroed = traverse_util.unflatten_dict(zeroed)
    total = None
    count = 0
    images = first
    while images is not None:
        moments = batch_moments(variables["params"], zeroed, images)
        total = moments if total is None else jax.tree.map(jnp.add, total, moments)
        count += 1
        if num_batches is not None and count >= num_batches:
            break
        images = next(iterator, None)
    averaged = {k: total[k] / count for k in scale}
    return traverse_util.unflatten_dict({**flat, **averaged})


@functools.lru_cache(maxsize=8)
def _batch_moments_fn(
    model: nn.Module, scale: tuple[tuple[tuple[str, ...], float], ...]
) -> Callable[[PyTree, PyTree, jax.Array], dict]:
    """``(params, zeroed_stats, images) -> {path: batch statistic}`` for the re-estimated layers.

    Cached per model and layer set, so a run that evaluates (and re-estimates) many times
    compiles the train-mode forward pass once, not at every evaluation."""

    @jax.jit
    def moments(params, zeroed, images):
        _, updated = model.apply(
            {"params": params, "batch_stats": zeroed},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)},  # train mode as the run trains, dropout included
        )
        flat = traverse_util.flatten_dict(updated["batch_stats"])
        return {k: flat[k].astype(jnp.float32) * s for k, s in scale}

    return moments


__all__ = ["reestimate_batch_stats"]
