"""Weights from the files and formats they are published in, checked tensor by tensor.

>>> from cnn_flax import weights
>>> variables, provenance = weights.load("resnet50", "IMAGENET1K_V2")  # "DEFAULT", "timm:a1_in1k"
>>> [w.name for w in weights.published("resnet50")][:2]
['IMAGENET1K_V2', 'IMAGENET1K_V1']
>>> variables, provenance = weights.load("efficientnet_lite0", "efficientnet-lite0-57934424.pth")
>>> variables = weights.convert("resnet50", state_dict, format="torchvision")

This package knows files (``torch.save`` pickles, safetensors), sources (paths, URLs and their
cache) and the checks every conversion needs; it knows no family. Each family states its own
mapping per format (``Family.mappings`` in :mod:`cnn_flax.models.registry`); :func:`convert` runs
it through a strict reader, refuses a state dict with tensors left unused, and compares every
shape with the freshly initialised model; :func:`load` reads a file or URL, detects the format
from its keys and records the weights' :class:`Provenance`.
"""

from cnn_flax.models.state_dict import (
    StateDictReader,
    conv_kernel,
    dense_kernel,
    dense_kernel_from_nchw_flatten,
    to_numpy,
)
from cnn_flax.weights import torch_zip
from cnn_flax.weights.convert import WeightsError, convert, formats_for, model_overrides
from cnn_flax.weights.files import read_tensors
from cnn_flax.weights.load import Loaded, Provenance, load, published, published_set
from cnn_flax.weights.sources import cache_dir, fetch

__all__ = [
    "Loaded",
    "Provenance",
    "StateDictReader",
    "WeightsError",
    "cache_dir",
    "conv_kernel",
    "convert",
    "dense_kernel",
    "dense_kernel_from_nchw_flatten",
    "fetch",
    "formats_for",
    "load",
    "model_overrides",
    "published",
    "published_set",
    "read_tensors",
    "to_numpy",
    "torch_zip",
]
