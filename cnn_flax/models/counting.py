"""Multiply-accumulates counted the way torchvision and the papers count them.

Every kernel tap of every convolution and every matrix product, padding included, nothing else
(no BatchNorm, activations or pooling), read from the jaxpr of the function: nothing is compiled
or allocated. This is the figure for comparing architectures (the model table, the experiments);
XLA's cost analysis (:mod:`cnn_flax.perf.flops`) is the figure for throughput, since it counts
what the compiled program actually executes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import jax


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
