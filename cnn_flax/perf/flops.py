"""FLOP counts from XLA's cost analysis of the lowered computation.

Counting from the compiler rather than by hand means every model is counted the same way,
whatever its layers. The counts are taken from the *lowered* (not yet compiled) computation, so
they are cheap: no XLA optimisation passes and no device memory.

XLA counts a multiply-accumulate as two FLOPs and, for convolutions, counts only the kernel taps
that land on real (not padding) input pixels. Vendors' "GFLOPs" tables, torchvision's among
them, count multiply-accumulates including padded taps, so ``forward_flops`` is somewhat below
twice torchvision's figure: about 8% below for AlexNet at 224 pixels, whose 3x3 convolutions
run on 13x13 maps where one tap in ten is padding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from cnn_flax.models import create_model, model_info


def cost_flops(stage: Any) -> float:
    """The ``flops`` entry of a ``jax.stages.Lowered`` or ``Compiled`` cost analysis.

    Raises:
      ValueError: when the backend reports no FLOP count.
    """
    analysis = stage.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax returned one dict per computation
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        raise ValueError(
            "XLA's cost analysis returned no 'flops' entry on this backend; FLOPs are unavailable."
        )
    return float(analysis["flops"])


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
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images)
    return cost_flops(lowered) / batch
