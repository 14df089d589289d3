"""Weights from the formats they are published in, checked tensor by tensor.

>>> from cnn_flax import weights
>>> variables = weights.convert("resnet50", state_dict, format="torchvision")

This package knows file formats and the checks every conversion needs; it knows no family. Each
family states its own mapping per format (``Family.mappings`` in
:mod:`cnn_flax.models.registry`); :func:`convert` runs it through a strict reader, refuses a state
dict with tensors left unused, and compares every shape with the freshly initialised model.
"""

from cnn_flax.weights.convert import WeightsError, convert, formats_for, model_overrides
from cnn_flax.weights.state_dict import (
    StateDictReader,
    conv_kernel,
    dense_kernel,
    dense_kernel_from_nchw_flatten,
    to_numpy,
)

__all__ = [
    "StateDictReader",
    "WeightsError",
    "conv_kernel",
    "convert",
    "dense_kernel",
    "dense_kernel_from_nchw_flatten",
    "formats_for",
    "model_overrides",
    "to_numpy",
]
