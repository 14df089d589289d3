"""FLOP counts from XLA's cost analysis of the lowered computation.

Counting from the compiler rather than by hand means every model is counted the same way,
whatever its layers. The counts are taken from the *lowered* (not yet compiled) computation, so
they are cheap: no XLA optimisation passes and no device memory.

XLA counts a multiply-accumulate as two FLOPs and, for convolutions, counts only the kernel taps
that land on real (not padding) input pixels. Vendors' "GFLOPs" tables, torchvision's among
them, count multiply-accumulates including padded taps, so ``forward_flops`` is somewhat below
twice torchvision's figure: about 8% below for AlexNet at 224 pixels, whose 3x3 convolutions
run on 13x13 maps where one tap in ten is padding.

Some backends (jax 0.11's CUDA plugin, seen on an H200) report no FLOPs for the lowered
computation, and their *compiled* count is no substitute: convolutions run as cuDNN custom calls
that the count skips (0.083 "GFLOPs" for a ResNet-50 forward pass there). ``forward_flops`` then
falls back to twice the multiply-accumulates counted from the jaxpr
(:mod:`cnn_flax.models.counting`), with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from cnn_flax.models import create_model, model_info
from cnn_flax.models.counting import count_macs


def cost_flops(stage: Any) -> float:
    """The ``flops`` entry of a ``jax.stages.Lowered`` or ``Compiled`` cost analysis.

    Raises:
      ValueError: when the backend reports no FLOP count.
    """
    try:
        analysis = stage.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement cost analysis
        analysis = None
    if isinstance(analysis, (list, tuple)):  # older jax returned one dict per computation
        analysis = analysis[0] if analysis else None
    if not analysis or float(analysis.get("flops", 0.0)) <= 0:
        raise ValueError(
            "XLA's cost analysis returned no 'flops' entry on this backend; FLOPs are unavailable."
        )
    return float(analysis["flops"])


def lowered_or_jaxpr_flops(lowered: Any, fn: Callable, *args: Any) -> float:
    """XLA's FLOP count of ``lowered`` (``fn`` lowered on ``args``), or, where the backend gives
    none, twice the multiply-accumulates of ``fn``'s jaxpr, with a warning."""
    try:
        return cost_flops(lowered)
    except ValueError:
        warnings.warn(
            f"{jax.default_backend()}: XLA's cost analysis gives no FLOP count; using 2 x the "
            "multiply-accumulates counted from the jaxpr (padded taps included) instead.",
            stacklevel=2,
        )
        return 2.0 * count_macs(fn, *args)


def forward_flops(
    model_name: str,
    *,
    resolution: int | None = None,
    batch: int = 1,
    dtype: jnp.dtype = jnp.float32,
) -> float:
    """FLOPs of one inference forward pass, per image.

    Args:
      model_name: a registered model name.
      resolution: square input size in pixels; ``None`` uses the model's default resolution.
      batch: batch size to lower with (the count is divided by it).
      dtype: compute dtype; it changes nothing for convolutions and matmuls.

    Returns:
      FLOPs per image (about twice the multiply-accumulates; see the module docstring).
    """
    res = resolution or model_info(model_name).resolution
    model = create_model(model_name, dtype=dtype)
    images = jax.ShapeDtypeStruct((batch, res, res, 3), jnp.float32)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), train=False)
    )
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    lowered = forward.lower(variables, images)
    return lowered_or_jaxpr_flops(lowered, forward, variables, images) / batch
