"""Import torchvision weights into cnn_flax models.

>>> import torchvision
>>> from cnn_flax.convert import from_torchvision
>>> sd = torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict()
>>> variables = from_torchvision("resnet50", sd)

One mapping module per family (``cnn_flax.convert.<family>``) exposes
``convert(name, reader) -> {"params": ..., "batch_stats": ...}``. This module checks the result
against the shapes of the freshly initialised cnn_flax model, and that no torchvision key was left
unused, so a wrong mapping fails loudly instead of producing a quietly broken model.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.convert.common import StateDictReader
from cnn_flax.models import create_model, model_info


def from_torchvision(name: str, state_dict: Mapping[str, Any], **overrides) -> dict:
    """Converts a torchvision ``state_dict`` into cnn_flax variables for model ``name``.

    Args:
      name: a cnn_flax model name whose registry entry names a torchvision model.
      state_dict: torchvision's ``model.state_dict()``; values may be torch tensors or numpy arrays.
      **overrides: model overrides the weights need (e.g. ``aux_logits=False``), passed to
        :func:`cnn_flax.models.create_model` for the shape check.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` only for models with BatchNorm) as
      numpy float32 arrays, ready for ``model.apply``.

    Raises:
      ValueError: if the model has no torchvision counterpart, keys are left unused, or a shape
        differs from the cnn_flax model's.
    """
    info = model_info(name)
    if info.torchvision is None:
        raise ValueError(
            f"Model {name!r} has no torchvision counterpart, so there are no torchvision weights "
            f"to import. Models with one: "
            f"{[n for n in _models_with_torchvision()]}"
        )
    mapping = importlib.import_module(f"cnn_flax.convert.{info.family}")
    reader = StateDictReader(state_dict)
    variables = mapping.convert(name, reader)
    leftover = reader.unused()
    if leftover:
        raise ValueError(
            f"Converting {name!r}: {len(leftover)} state-dict keys were not used, e.g. "
            f"{leftover[:5]}. The state dict does not belong to torchvision's {info.torchvision!r}."
        )
    num_classes = _num_classes(variables)
    _check_shapes(name, variables, num_classes=num_classes, **overrides)
    return jax.tree.map(lambda x: np.asarray(x, dtype=np.float32), variables)


def _models_with_torchvision() -> list[str]:
    from cnn_flax.models import list_models

    return [n for n in list_models() if model_info(n).torchvision]


def _num_classes(variables: dict) -> int:
    head = variables["params"]["head"]
    kernel = head["kernel"] if "kernel" in head else jax.tree.leaves(head)[0]
    return int(np.shape(kernel)[-1])


def _check_shapes(name: str, variables: dict, *, num_classes: int, **overrides) -> None:
    info = model_info(name)
    model = create_model(name, num_classes=num_classes, **overrides)
    res = info.resolution
    expected = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), train=False)
    )
    exp_shapes = {jax.tree_util.keystr(p): v.shape for p, v in _flat(expected)}
    got_shapes = {jax.tree_util.keystr(p): np.shape(v) for p, v in _flat(variables)}
    missing = sorted(set(exp_shapes) - set(got_shapes))
    extra = sorted(set(got_shapes) - set(exp_shapes))
    wrong = sorted(
        k for k in exp_shapes.keys() & got_shapes.keys() if exp_shapes[k] != got_shapes[k]
    )
    if missing or extra or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}")
        if extra:
            details.append(f"unexpected {extra[:5]}")
        if wrong:
            details.append(
                "shape mismatch "
                + ", ".join(f"{k}: {got_shapes[k]} vs {exp_shapes[k]}" for k in wrong[:5])
            )
        raise ValueError(
            f"Converted {name!r} does not fit the cnn_flax model: " + "; ".join(details)
        )


def _flat(tree: Any):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


__all__ = ["from_torchvision"]
