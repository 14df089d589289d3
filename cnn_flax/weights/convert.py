"""One conversion path for every format: the family's mapping, then the shared checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.models.state_dict import StateDictReader
from cnn_flax.trees import shape_differences


class WeightsError(ValueError):
    """Weights that do not fit the model: unknown format, unused tensors, wrong shapes."""


def formats_for(name: str) -> list[str]:
    """The weight formats model ``name``'s family can read (e.g. ``["torchvision"]``)."""
    from cnn_flax.models import model_info

    return sorted(model_info(name).mappings)


def convert(
    name: str,
    state_dict: Mapping[str, Any],
    *,
    format: str = "torchvision",  # noqa: A002 - the natural name of the argument
    **overrides: Any,
) -> dict:
    """Converts a state dict of ``format`` into cnn_flax variables for model ``name``.

    Args:
      name: a registered cnn_flax model name.
      state_dict: tensor name -> torch tensor or numpy array.
      format: the naming scheme of ``state_dict`` (a key of the family's mappings).
      **overrides: model overrides on top of those the family reads off the weights
        (:func:`model_overrides`), used to build the model whose shapes the result must match.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` only for models with BatchNorm)
      as float32 numpy arrays.

    Raises:
      WeightsError: the family has no mapping for ``format``, tensors are left unused, or a
        shape differs from the cnn_flax model's.
    """
    from cnn_flax.models import list_models, model_info

    info = model_info(name)
    if format == "torchvision" and info.torchvision is None:
        raise WeightsError(
            f"Model {name!r} has no torchvision counterpart, so no torchvision weights fit it."
        )
    mapping = info.mappings.get(format)
    if mapping is None:
        readable = [n for n in list_models() if format in model_info(n).mappings]
        known = ", ".join(sorted(info.mappings)) or "none"
        raise WeightsError(
            f"Model {name!r} ({info.family}) has no {format} weight mapping (it reads: {known}). "
            f"Models with one: {', '.join(readable) or 'none'}."
        )
    reader = StateDictReader(state_dict)
    variables = mapping(name, reader)
    leftover = reader.unused()
    if leftover:
        raise WeightsError(
            f"Converting {name!r}: {len(leftover)} of {len(state_dict)} tensors were not used, "
            f"e.g. {leftover[:5]}. The file does not hold {format} weights of {name!r}."
        )
    overrides = model_overrides(name, variables, overrides)
    check_shapes(name, variables, num_classes=head_classes(variables), **overrides)
    return jax.tree.map(lambda x: np.asarray(x, dtype=np.float32), variables)


def model_overrides(
    name: str, variables: Mapping[str, Any], explicit: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The model overrides converted ``variables`` need: the family's, then ``explicit`` ones."""
    from cnn_flax.models import model_info

    return {**model_info(name).weight_overrides(name, variables), **(explicit or {})}


def head_classes(variables: Mapping[str, Any]) -> int:
    """The class count of converted variables: the output size of their ``head`` layer."""
    head = variables["params"]["head"]
    kernel = head["kernel"] if "kernel" in head else jax.tree.leaves(head)[0]
    return int(np.shape(kernel)[-1])


def check_shapes(name: str, variables: Any, *, num_classes: int, **overrides: Any) -> None:
    """Raises :class:`WeightsError` unless ``variables`` has exactly the model's tree and shapes."""
    from cnn_flax.models import create_model, model_info

    info = model_info(name)
    model = create_model(name, num_classes=num_classes, **overrides)
    res = info.resolution
    expected = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), train=False)
    )
    details = shape_differences(expected, variables)
    if details:
        raise WeightsError(
            f"Converted {name!r} does not fit the cnn_flax model: {'; '.join(details)}"
        )
