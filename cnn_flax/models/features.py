"""Multi-scale feature maps: every model as a backbone for detection, segmentation or probing.

A family says where its stage maps are with a :class:`FeatureNodes`: patterns over the names of
its top-level modules (``"stage*"``), and the torchvision node (``create_feature_extractor``)
each map corresponds to. The levels themselves are derived from the model, not written down:
:func:`resolve_levels` traces it at its resolution (``jax.eval_shape``, no computation) and
takes, among the matching modules, the last one called at each reduction (2, 4, 8, 16, 32), with
its channels. :class:`Features` then runs the classifier unchanged and hands out the outputs of
those modules, caught with ``nn.intercept_methods``; it shares the classifier's scope, so its
parameters carry the classifier's names and any checkpoint or published weights load into it.

This is timm's ``features_only`` / ``feature_info`` (module, channels, reduction) and
torchvision's ``create_feature_extractor`` for Flax, without rewriting any family's forward pass.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class FeatureNodes:
    """Where a family's feature maps are.

    Attributes:
      modules: ``fnmatch`` patterns over the model's top-level module names (``"stem"``,
        ``"stage*"``); a map is the output of one such module's ``__call__``.
      torchvision: ``(variant, module) -> node``: the torchvision node (a name of
        ``torchvision.models.feature_extraction.get_graph_node_names``) whose output equals the
        module's; ``None`` where the family has no torchvision counterpart.
      every: every matching module is a level (ViT's encoder blocks, all at one reduction);
        otherwise the last matching module called at each reduction is.
      tokens: the outputs are token sequences ``[batch, tokens, dim]`` (ViT); leading tokens
        beyond the patch grid (the class token) are dropped and the grid is reshaped to NHWC.
    """

    modules: tuple[str, ...]
    torchvision: Callable[[str, str], str] | None = None
    every: bool = False
    tokens: bool = False


@dataclasses.dataclass(frozen=True)
class FeatureLevel:
    """One feature map of a model, as traced from it.

    Attributes:
      module: the top-level module whose output it is, e.g. ``"stage2_block3"``.
      channels: channels of the map.
      reduction: input size / map size at the model's resolution (a power of two, or the patch
        size of a ViT); odd sizes (SqueezeNet's, Inception's unpadded layers) round to the nearest
        power of two, as timm reports them.
      torchvision: the torchvision node that gives the same map, or ``None``.
      tokens: the module outputs tokens, reshaped to a map (see :class:`FeatureNodes`).
    """

    module: str
    channels: int
    reduction: int
    torchvision: str | None = None
    tokens: bool = False


def _reduction(resolution: int, size: int) -> int:
    if resolution % size == 0:
        return resolution // size
    return 2 ** round(math.log2(resolution / size))


def _grid_size(tokens: int) -> int:
    """Side of the square patch grid in a sequence of ``tokens`` (a few leading extra tokens)."""
    return math.isqrt(tokens)


def top_level_calls(model: nn.Module, resolution: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every call of a top-level module of ``model``, in order, traced
    (no computation) on one ``resolution``-pixel image in eval mode."""
    calls = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = context.module.path
        if context.method_name == "__call__" and len(path) == 1 and hasattr(out, "shape"):
            calls.append((path[0], tuple(out.shape)))
        return out

    images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), images)
    return calls


def resolve_levels(
    model: nn.Module, nodes: FeatureNodes, *, resolution: int, name: str
) -> tuple[FeatureLevel, ...]:
    """The feature levels of ``model`` (variant ``name``), derived by tracing it at
    ``resolution`` (see :class:`FeatureNodes` for which modules count)."""
    levels: dict = {}
    for module, shape in top_level_calls(model, resolution):
        if not any(fnmatch.fnmatchcase(module, pattern) for pattern in nodes.modules):
            continue
        size = _grid_size(shape[1]) if nodes.tokens else shape[1]
        reduction = _reduction(resolution, size)
        level = FeatureLevel(
            module=module,
            channels=shape[-1],
            reduction=reduction,
            torchvision=nodes.torchvision(name, module) if nodes.torchvision else None,
            tokens=nodes.tokens,
        )
        # Later calls at the same reduction replace earlier ones, in the first one's place.
        levels[module if nodes.every else reduction] = level
    if not levels:
        raise ValueError(f"{name}: no module matches the feature nodes {nodes.modules}.")
    return tuple(levels.values())


def select_levels(
    levels: Sequence[FeatureLevel], out_indices: Sequence[int] | None, *, name: str
) -> tuple[FeatureLevel, ...]:
    """The levels at ``out_indices`` (all of them for ``None``; negative indices count from the
    deepest), or a ``ValueError`` that lists the levels there are."""
    if out_indices is None:
        return tuple(levels)
    chosen = []
    for i in out_indices:
        if not -len(levels) <= i < len(levels):
            listed = ", ".join(f"{j}: {lv.module} (/{lv.reduction})" for j, lv in enumerate(levels))
            raise ValueError(
                f"{name}: out_indices has {i}, but the model has {len(levels)} feature levels "
                f"({listed}); pick indices among them."
            )
        chosen.append(levels[i])
    return tuple(chosen)


def tokens_to_map(tokens: jax.Array, *, height: int, width: int) -> jax.Array:
    """``[batch, extra + height * width, dim]`` tokens -> ``[batch, height, width, dim]``, the
    ``extra`` leading tokens (ViT's class token) dropped."""
    batch, count, dim = tokens.shape
    return tokens[:, count - height * width :].reshape(batch, height, width, dim)


class Features(nn.Module):
    """A classifier that also (or only) returns its feature maps, one per chosen level.

    Built by ``create_model(name, features_only=True)`` (the classifier without its head; returns
    the list of maps) or ``create_model(name, return_features=True)`` (returns ``(logits,
    maps)`` from one pass, for distillation and probing). The maps are NHWC in the model's
    compute dtype, shallowest first. The wrapped model shares this module's scope: the
    parameters are the classifier's, under the same names.

    Attributes:
      model: the classifier (``num_classes=0`` for a backbone alone).
      levels: the levels returned, in order (:func:`resolve_levels`, :func:`select_levels`).
      with_logits: return ``(logits, maps)`` rather than the maps alone.
    """

    model: nn.Module
    levels: tuple[FeatureLevel, ...]
    with_logits: bool = False

    def setup(self):
        nn.share_scope(self, self.model)

    def __call__(
        self, x: jax.Array, *, train: bool
    ) -> list[jax.Array] | tuple[jax.Array, list[jax.Array]]:
        wanted = {level.module for level in self.levels}
        depth = len(self.path) + 1
        caught: dict[str, jax.Array] = {}

        def catch(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            path = context.module.path
            if context.method_name == "__call__" and len(path) == depth and path[-1] in wanted:
                caught[path[-1]] = out
            return out

        with nn.intercept_methods(catch):
            logits = self.model(x, train=train)
        maps = []
        for level in self.levels:
            out = caught[level.module]
            if level.tokens:
                height, width = x.shape[1] // level.reduction, x.shape[2] // level.reduction
                out = tokens_to_map(out, height=height, width=width)
            maps.append(out)
        return (logits, maps) if self.with_logits else maps
