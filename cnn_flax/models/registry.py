"""A registry of named model variants.

Every family module registers its variants with :func:`register`; users build them with
:func:`create_model`. A variant is a builder (usually a ``functools.partial`` of the family's
generic module) plus the facts other parts of cnn_flax need: its default input resolution, the
paper it follows and, where there is one, the torchvision model it must match.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one named variant.

    Attributes:
      name: registry name, e.g. ``"resnet50"``.
      family: family module name, e.g. ``"resnet"``.
      builder: callable returning the Flax module; takes ``num_classes``, ``dtype`` and overrides.
      resolution: default (square) input resolution in pixels.
      reference: the paper (or other source) the variant follows.
      torchvision: torchvision model name it matches exactly, or ``None``.
      eval_crop_ratio: centre-crop ratio for evaluation (crop = resolution / resize).
      paper_params: the published parameter count as printed in the paper, e.g. ``"4.2M"`` or
        ``"0.27M"``, for variants torchvision does not have; tests check the count to the
        paper's precision.
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    resolution: int
    reference: str
    torchvision: str | None = None
    eval_crop_ratio: float = 0.875
    paper_params: str | None = None


_REGISTRY: dict[str, ModelInfo] = {}


def register(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    family: str,
    reference: str,
    resolution: int = 224,
    torchvision: str | None = None,
    eval_crop_ratio: float = 0.875,
    paper_params: str | None = None,
) -> Callable[..., nn.Module]:
    """Registers ``builder`` under ``name`` and returns it unchanged.

    Raises:
      ValueError: if ``name`` is already registered.
    """
    if name in _REGISTRY:
        raise ValueError(f"Model {name!r} is registered twice; pick a new name.")
    _REGISTRY[name] = ModelInfo(
        name=name,
        family=family,
        builder=builder,
        resolution=resolution,
        reference=reference,
        torchvision=torchvision,
        eval_crop_ratio=eval_crop_ratio,
        paper_params=paper_params,
    )
    return builder


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ValueError(
        f"Unknown model {name!r}.{hint} `python -m cnn_flax.models` lists all "
        f"{len(_REGISTRY)} models."
    )


def model_info(name: str) -> ModelInfo:
    """Returns the :class:`ModelInfo` of a registered model.

    Raises:
      ValueError: naming the closest registered names when ``name`` is unknown.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise _unknown(name) from None


def list_models(family: str | None = None) -> list[str]:
    """Names of all registered models (of one family, if given), in registration order."""
    return [n for n, info in _REGISTRY.items() if family is None or info.family == family]


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    dtype: jnp.dtype = jnp.float32,
    **overrides,
) -> nn.Module:
    """Builds the named model.

    Args:
      name: a name from :func:`list_models`.
      num_classes: size of the classifier output.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters and BatchNorm statistics
        always stay float32.
      **overrides: fields of the family's module to change, e.g. ``dropout_rate=0.0``.

    Returns:
      An unbound Flax Linen module; call ``init``/``apply`` with NHWC images and ``train=...``.
    """
    info = model_info(name)
    try:
        return info.builder(num_classes=num_classes, dtype=dtype, **overrides)
    except TypeError as err:
        raise TypeError(
            f"create_model({name!r}) got an override it does not accept: {err}. "
            f"Check the field names of the {info.family} module."
        ) from None
