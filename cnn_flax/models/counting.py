"""Multiply-accumulates counted the way torchvision and the papers count them.

Every kernel tap of every convolution and every matrix product, padding included, nothing else
(no BatchNorm, activations or pooling), read from the jaxpr of the function: nothing is compiled
or allocated. This is the figure for comparing architectures (the model table, the experiments);
XLA's cost analysis (:mod:`cnn_flax.perf.flops`) is the figure for throughput, since it counts
what the compiled program actually executes.

:func:`describe` gives a registered model's row of the model table (``python -m cnn_flax.models``):
parameters from ``jax.eval_shape`` of ``init`` and multiply-accumulates from the jaxpr of
``apply``, with no arrays allocated. XLA's cost analysis is not used there because it skips kernel
taps that land on padding and adds the elementwise work, which puts it about 8% under
torchvision's figure for AlexNet; the count here matches torchvision's to its rounding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp

from cnn_flax.models.registry import create_model, model_info


def _sub_jaxprs(eqn: jax.extend.core.JaxprEqn) -> Iterator[jax.extend.core.Jaxpr]:
    """The jaxprs nested in an equation (``pjit``, ``custom_jvp_call``, ``remat``, ``scan``...)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def _jaxpr_macs(jaxpr: jax.extend.core.Jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            out_shape = eqn.outvars[0].aval.shape
            kernel_shape = eqn.invars[1].aval.shape
            out_features_dim = eqn.params["dimension_numbers"].rhs_spec[0]
            # Each output element takes (kernel taps x input features per group) products.
            total += (
                math.prod(out_shape) * math.prod(kernel_shape) // kernel_shape[out_features_dim]
            )
        elif name == "dot_general":
            (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            contracted = math.prod(lhs_shape[d] for d in lhs_contracting)
            total += math.prod(eqn.outvars[0].aval.shape) * contracted
        else:
            repeats = eqn.params.get("length", 1) if name == "scan" else 1
            total += repeats * sum(_jaxpr_macs(sub) for sub in _sub_jaxprs(eqn))
    return total


def count_macs(fn: Callable, *args) -> int:
    """Multiply-accumulates of convolutions and matrix products in ``fn(*args)``.

    Args:
      fn: a JAX-traceable function.
      *args: its arguments; arrays or ``jax.ShapeDtypeStruct`` (nothing is computed).

    Returns:
      The count, padded kernel taps included, as torchvision and the papers count it.
    """
    return _jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One line of the model table.

    Attributes:
      name: registry name.
      family: family module.
      num_classes: classifier outputs counted: 1000, or 10 for the CIFAR models.
      params: trainable parameters of the default constructor (GoogLeNet: with its aux heads).
      gmacs: billions of multiply-accumulates of one image at ``resolution``.
      resolution: default input resolution in pixels.
      top1: the default weights' published ImageNet top-1 (%), or ``None``.
      weights: the weights entry ``top1`` belongs to, e.g. ``"IMAGENET1K_V2"``.
    """

    name: str
    family: str
    num_classes: int
    params: int
    gmacs: float
    resolution: int
    top1: float | None
    weights: str | None


def default_num_classes(name: str) -> int:
    """The classifier size of the model's dataset: 10 for CIFAR models, else ImageNet's 1000.

    The registry has no dataset field; models registered at CIFAR's 32 pixels are the CIFAR-10
    models of their papers, whose published parameter counts include a 10-way head.
    """
    return 10 if model_info(name).resolution == 32 else 1000


def describe(
    name: str, *, num_classes: int | None = None, resolution: int | None = None
) -> ModelRow:
    """Counts parameters and multiply-accumulates of model ``name`` (shapes only, no compile).

    Args:
      name: a registered model name.
      num_classes: classifier size; ``None`` takes :func:`default_num_classes`.
      resolution: square input size; ``None`` takes the model's default resolution.
    """
    info = model_info(name)
    res = resolution or info.resolution
    num_classes = num_classes or default_num_classes(name)
    # XLA's own convolutions: the count reads convolution and matrix-product operations, which the
    # CPU implementations a model picks by default partly write as shifted multiply-adds.
    model = create_model(name, num_classes=num_classes, conv="xla")
    images = jax.ShapeDtypeStruct((1, res, res, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
    macs = count_macs(lambda v, x: model.apply(v, x, train=False), variables, images)
    ref = info.default_weights()
    return ModelRow(
        name=name,
        family=info.family,
        num_classes=num_classes,
        params=params,
        gmacs=macs / 1e9,
        resolution=res,
        top1=ref.top1 if ref else None,
        weights=ref.tag if ref else None,
    )
