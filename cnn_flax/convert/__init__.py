"""Import torchvision weights into cnn_flax models.

>>> import torchvision
>>> from cnn_flax.convert import from_torchvision
>>> sd = torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict()
>>> variables = from_torchvision("resnet50", sd)

The mapping of each family lives with the family (``cnn_flax/models/<family>.py``); the checks
(every tensor used once, every shape the model's) in :mod:`cnn_flax.weights`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cnn_flax.weights import convert


def from_torchvision(name: str, state_dict: Mapping[str, Any], **overrides: Any) -> dict:
    """Converts a torchvision ``state_dict`` into cnn_flax variables for model ``name``.

    Args:
      name: a cnn_flax model name whose registry entry names a torchvision model.
      state_dict: torchvision's ``model.state_dict()``; torch tensors or numpy arrays.
      **overrides: model overrides the weights need (e.g. ``aux_logits=False``).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` as float32 numpy arrays.

    Raises:
      cnn_flax.weights.WeightsError (a ``ValueError``): no torchvision counterpart, tensors left
        unused, or shapes that do not fit.
    """
    return convert(name, state_dict, format="torchvision", **overrides)


__all__ = ["from_torchvision"]
