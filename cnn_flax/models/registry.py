"""The model registry: every family registers its named variants with their facts.

A family module (``cnn_flax/models/<family>.py``) owns everything about its networks: the Flax
module, the named variants, the facts of each variant (resolution, evaluation transform, the
paper it follows, the torchvision model it must match, its published weight sets and their
accuracies), the weight mappings from the formats its weights are published in, and its
training recipe. It declares a :class:`Family` and registers its variants through it; the rest
of cnn_flax (the converter, predict, the model table, the recipe lookup) reads those facts from
here and knows no family by name. This follows timm's habit of keeping a weight set's facts
(``default_cfgs``) beside the model that uses them.

Nothing here imports TensorFlow, torch or ml_collections: a family's facts are plain data.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnn_flax.models import features as feature_maps
from cnn_flax.models.features import FeatureLevel, FeatureNodes
from cnn_flax.models.layers import IMAGENET_MEAN, IMAGENET_STD

# A weight mapping turns a state dict (read through ``cnn_flax.weights.StateDictReader``) into
# ``{"params": ..., "batch_stats": ...}`` for the named variant.
WeightMapping = Callable[[str, Any], dict]
# Model overrides that converted variables need, read off the variables (e.g. GoogLeNet without
# auxiliary heads needs ``aux_logits=False``).
WeightOverrides = Callable[[str, Mapping[str, Any]], dict]


def no_overrides(name: str, variables: Mapping[str, Any]) -> dict:
    """The default :data:`WeightOverrides`: converted weights fit the default model."""
    del name, variables
    return {}


INTERPOLATIONS = ("bilinear", "bicubic")
# The torchvision release whose weights metadata the families' torchvision figures are read from.
TORCHVISION_VERSION = "0.29.1"


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(mapping or {}))


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """The evaluation transform, the one type for it: ``Resize(resize)`` of the shorter side,
    then ``CenterCrop(crop)``, with the given interpolation (torchvision's). A weight set's facts
    state one; a training config's data fields give one (:func:`cnn_flax.data.sizes.eval_sizes`);
    a checkpoint's :class:`cnn_flax.data.eval_transform.Preprocessing` adds its normalisation.

    Attributes:
      crop: centre-crop size in pixels (the model's input resolution).
      resize: the shorter side is resized to this before cropping.
      interpolation: ``"bilinear"`` or ``"bicubic"``.
      ratio: the crop ratio exactly, when it was stated as one (a config's ``eval_crop_ratio``,
        of which ``resize`` is the rounding); ``None``: ``crop / resize``.
    """

    crop: int
    resize: int
    interpolation: str = "bilinear"
    ratio: float | None = None

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r}; use one of {INTERPOLATIONS}.")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"EvalTransform needs 0 < crop <= resize, got {self}.")

    @property
    def crop_ratio(self) -> float:
        """``crop / resize`` (0.875 for the classic 224-of-256), or the ratio as stated."""
        return self.crop / self.resize if self.ratio is None else self.ratio

    @classmethod
    def from_ratio(cls, crop: int, ratio: float, interpolation: str = "bilinear") -> EvalTransform:
        """The transform that crops ``crop`` pixels out of a ``round(crop / ratio)`` resize."""
        return cls(crop=crop, resize=round(crop / ratio), interpolation=interpolation)


@dataclasses.dataclass(frozen=True)
class Weights:
    """A published weight set of one variant, with the figures its publisher reports.

    Attributes:
      source: who publishes it: ``"torchvision"``, ``"timm"``, ``"tf"``, ...
      tag: the publisher's name for it, e.g. ``"IMAGENET1K_V2"``.
      transform: the evaluation transform the figures were measured with.
      top1: ImageNet-1k validation top-1 accuracy in percent, as published.
      top5: the same for top-5.
      params: parameters in the weights.
      gmacs: multiply-accumulates at ``transform.crop`` in billions, as published (torchvision
        labels them "GFLOPS").
      overrides: model overrides these weights need (e.g. GoogLeNet's ``transform_input``).
      recipe: key of the variant's recipe that trained them (``""``: the default one).
      mean: per-channel mean the inputs are normalised with, on the [0, 1] scale (the model
        contract's ImageNet mean unless the weights were trained otherwise).
      std: per-channel standard deviation, on the same scale.
      sha256: SHA-256 of the published file, by which a file is recognised as these weights
        (:attr:`sha256_prefix` falls back on the hash prefix in ``url``'s file name).
      url: where the file is published (``""``: not downloadable by name, e.g. a file a Python
        package ships). torch hub's convention names the file ``<name>-<sha256 prefix>.<ext>``.
      hf_hub_id: the Hugging Face Hub repository of the file (``"timm/resnet50.a1_in1k"``),
        downloaded with ``huggingface_hub`` instead of ``url``.
      file_mb: the published file's size in MB (torchvision's ``_file_size``), or ``None`` when
        the publisher does not record it offline.
    """

    source: str
    tag: str
    transform: EvalTransform
    top1: float | None = None
    top5: float | None = None
    params: int | None = None
    gmacs: float | None = None
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    recipe: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    sha256: str = ""
    url: str = ""
    hf_hub_id: str = ""
    file_mb: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "overrides", _frozen(self.overrides))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"{self.tag}: mean and std need 3 channels, std > 0.")

    @property
    def name(self) -> str:
        """The name ``weights.load`` takes: torchvision's tag alone (``"IMAGENET1K_V2"``), any
        other publisher's prefixed with its source (``"timm:resnet50.a1_in1k"``)."""
        return self.tag if self.source == "torchvision" else f"{self.source}:{self.tag}"

    @property
    def sha256_prefix(self) -> str:
        """The full SHA-256 if known, else the prefix the URL's file name promises, else ``""``."""
        if self.sha256:
            return self.sha256
        found = _HASH_IN_NAME.search(self.url.rsplit("/", 1)[-1])
        return found.group(1) if found else ""


# torch hub's file names: ``resnet50-11ad3fa6.pth`` (the hex is the start of the file's SHA-256).
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[a-z]+$")
# Where torchvision publishes its weight files; ``CNN_FLAX_WEIGHTS_MIRROR`` may replace the host.
TORCHVISION_URL = "https://download.pytorch.org/models/"


def torchvision_weights(
    tag: str,
    file: str,
    crop: int,
    resize: int,
    interpolation: str,
    top1: float | None,
    top5: float | None,
    gmacs: float | None,
    params: int,
    file_mb: float,
    **extra: Any,
) -> Weights:
    """One entry of a torchvision ``*_Weights`` enum, from one row of a family's table.

    The rows are data written by ``python -m cnn_flax.weights.published_tables`` (and checked
    against torchvision's metadata by tests/models/test_weights_facts.py), so the arguments are
    positional in the enum's order; ``extra`` takes the other :class:`Weights` fields
    (``overrides``, ``recipe``, ``mean``/``std``).
    """
    return Weights(
        "torchvision",
        tag,
        EvalTransform(crop, resize, interpolation),
        top1=top1,
        top5=top5,
        params=params,
        gmacs=gmacs,
        url=TORCHVISION_URL + file,
        file_mb=file_mb,
        **extra,
    )


def timm_weights(
    model: str,
    crop: int,
    resize: int,
    interpolation: str,
    **extra: Any,
) -> Weights:
    """One of timm's Hugging Face Hub copies (``model`` = ``"<architecture>.<tag>"``), from its
    ``pretrained_cfg``: input size, ``floor(crop / crop_pct)`` resize, interpolation; ``extra``
    takes ``mean``/``std`` when they are not ImageNet's. timm does not ship its results tables,
    so ``top1`` is unknown offline unless given."""
    return Weights(
        "timm",
        model,
        EvalTransform(crop, resize, interpolation),
        hf_hub_id=f"timm/{model}",
        **extra,
    )


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe: a shared base recipe plus this family's or variant's changes.

    Recipes are data, so the family file states them without importing the training stack;
    :func:`cnn_flax.configs.get_config` builds the ``ml_collections`` config from them.

    Attributes:
      base: name of a shared base recipe in :mod:`cnn_flax.configs.recipes`.
      overrides: config changes on top of the base, as dotted keys (``"optimizer.lr": 0.5``).
      source: where the recipe comes from (paper section, reference script).
      target_top1: the top-1 the recipe should reach, in percent, or ``None`` when unpublished.
      target_source: where ``target_top1`` comes from.
    """

    base: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""
    target_top1: float | None = None
    target_source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "overrides", _frozen(self.overrides))

    def but(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        target_top1: float | None = None,
        target_source: str | None = None,
        source: str | None = None,
    ) -> Recipe:
        """This recipe with more overrides (later ones win) and, optionally, a new target."""
        return Recipe(
            base=self.base,
            overrides={**self.overrides, **(overrides or {})},
            source=self.source if source is None else source,
            target_top1=self.target_top1 if target_top1 is None else target_top1,
            target_source=self.target_source if target_source is None else target_source,
        )


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one named variant.

    Attributes:
      name: registry name, e.g. ``"resnet50"``.
      family: the family's name, e.g. ``"resnet"``.
      builder: returns the Flax module; takes ``num_classes``, ``dtype`` and module fields.
      reference: the paper (or other source) the variant follows.
      resolution: default (square) input resolution in pixels.
      transform: the default evaluation transform (that of the default weights, if any).
      torchvision: the torchvision model it matches exactly, or ``None``.
      weights: published weight sets, the default (torchvision's default entry) first.
      mappings: weight format -> mapping from a state dict of that format (the family's).
      weight_overrides: the model overrides converted variables need (the family's).
      recipes: recipe key -> :class:`Recipe`; ``""`` is the default recipe.
      paper_params: the paper's parameter count as printed (``"4.2M"``), for variants without a
        torchvision counterpart; tests check it to the paper's precision.
      feature_nodes: where the family's feature maps are (see :attr:`feature_info`).
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    reference: str
    resolution: int
    transform: EvalTransform
    torchvision: str | None = None
    weights: tuple[Weights, ...] = ()
    mappings: Mapping[str, WeightMapping] = dataclasses.field(default_factory=dict)
    weight_overrides: WeightOverrides = no_overrides
    recipes: Mapping[str, Recipe] = dataclasses.field(default_factory=dict)
    paper_params: str | None = None
    feature_nodes: FeatureNodes | None = None

    @property
    def feature_info(self) -> tuple[FeatureLevel, ...]:
        """The feature levels ``create_model(name, features_only=True)`` returns, shallowest
        first: each level's module, channels, reduction and torchvision node, traced from the
        default model at :attr:`resolution`."""
        return _feature_info(self.name)

    @property
    def eval_crop_ratio(self) -> float:
        """Centre-crop ratio of the default evaluation transform."""
        return self.transform.crop_ratio

    @property
    def recipe(self) -> Recipe | None:
        """The default training recipe, or ``None``."""
        return self.recipes.get("")

    def default_weights(self, source: str | None = None) -> Weights | None:
        """The first published weight set (of ``source``, if given), or ``None``."""
        for w in self.weights:
            if source is None or w.source == source:
                return w
        return None

    def weights_with_sha256(self, sha256: str) -> Weights | None:
        """The published weight set whose file has this SHA-256 (or whose URL's file name
        promises its prefix), or ``None``."""
        return next(
            (w for w in self.weights if w.sha256_prefix and sha256.startswith(w.sha256_prefix)),
            None,
        )


@dataclasses.dataclass(frozen=True)
class Family:
    """A family of variants: its name, weight mappings and default recipe.

    Attributes:
      name: family name (``ModelInfo.family``); by convention the module's name.
      reference: the paper the family follows, the default of each variant's ``reference``.
      mappings: weight format (``"torchvision"``, ``"timm"``, ...) -> mapping.
      weight_overrides: the model overrides converted variables need.
      recipe: the family's default training recipe.
      features: where its feature maps are, and the torchvision nodes they correspond to.
    """

    name: str
    reference: str
    mappings: Mapping[str, WeightMapping] = dataclasses.field(default_factory=dict)
    weight_overrides: WeightOverrides = no_overrides
    recipe: Recipe | None = None
    features: FeatureNodes | None = None

    def register(
        self,
        name: str,
        builder: Callable[..., nn.Module],
        *,
        reference: str | None = None,
        resolution: int = 224,
        transform: EvalTransform | None = None,
        torchvision: str | None = None,
        weights: tuple[Weights, ...] = (),
        recipe: Recipe | None = None,
        recipes: Mapping[str, Recipe] | None = None,
        paper_params: str | None = None,
    ) -> Callable[..., nn.Module]:
        """Registers variant ``name`` of this family and returns ``builder`` unchanged.

        The evaluation transform defaults to that of the first weight set, else to a centre crop
        of ``resolution`` out of a ``resolution / 0.875`` resize (224 of 256). ``recipe``
        replaces the family's default recipe for this variant; ``recipes`` adds named
        alternatives (``{"v2": ...}``, resolved as ``--config=<name>_v2``).
        """
        if transform is None:
            transform = (
                weights[0].transform if weights else EvalTransform.from_ratio(resolution, 0.875)
            )
        all_recipes = dict(recipes or {})
        default = recipe or self.recipe
        if default is not None:
            all_recipes[""] = default
        _add(
            ModelInfo(
                name=name,
                family=self.name,
                builder=builder,
                reference=reference or self.reference,
                resolution=resolution,
                transform=transform,
                torchvision=torchvision,
                weights=tuple(weights),
                mappings=_frozen(self.mappings),
                weight_overrides=self.weight_overrides,
                recipes=_frozen(all_recipes),
                paper_params=paper_params,
                feature_nodes=self.features,
            )
        )
        return builder


_REGISTRY: dict[str, ModelInfo] = {}


def _add(info: ModelInfo) -> None:
    if info.name in _REGISTRY:
        raise ValueError(f"Model {info.name!r} is registered twice; pick a new name.")
    for w in info.weights:
        if w.recipe not in info.recipes and w.recipe:
            raise ValueError(f"{info.name}: weights {w.tag} name an unknown recipe {w.recipe!r}.")
    _REGISTRY[info.name] = info


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


def list_families() -> list[str]:
    """Names of the registered families, in registration order."""
    return list(dict.fromkeys(info.family for info in _REGISTRY.values()))


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    dtype: jnp.dtype = jnp.float32,
    features_only: bool = False,
    return_features: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Builds the named model.

    Every model follows one contract: ``model.apply(variables, images, train=...)`` on NHWC
    images normalised with the ImageNet mean and std returns float32 logits
    ``[batch, num_classes]`` in every mode; ``num_classes=0`` drops the classifier and returns
    the features it would see (``[batch, num_features]``); the classifier's parameters are the
    top-level ``head`` subtree; auxiliary classifiers (GoogLeNet) sow their logits into the
    ``"aux_logits"`` collection in train mode.

    As a backbone (:class:`~cnn_flax.models.features.Features`): ``features_only=True`` returns
    the list of NHWC feature maps, one per level of ``model_info(name).feature_info`` (or of
    ``out_indices`` into it), shallowest first, without building the head; ``return_features=True``
    returns ``(logits, maps)`` from one pass. Either way the parameters are the classifier's,
    under the same names, so its checkpoints and published weights load (an unused ``head``
    subtree is ignored).

    Args:
      name: a name from :func:`list_models`.
      num_classes: size of the classifier output; 0 for a feature extractor.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters and BatchNorm statistics
        always stay float32.
      features_only: return the feature maps instead of the logits.
      return_features: return the logits and the feature maps together.
      out_indices: which levels of the feature maps (negative: from the deepest); all of them
        if ``None``. Only with ``features_only`` or ``return_features``.
      **overrides: fields of the family's module to change, e.g. ``dropout=0.0``.

    Returns:
      An unbound Flax Linen module.
    """
    info = model_info(name)
    if num_classes < 0:
        raise ValueError(f"num_classes={num_classes}; use a positive count, or 0 for features.")
    if features_only and return_features:
        raise ValueError("features_only and return_features exclude each other; pick one.")
    if out_indices is not None and not (features_only or return_features):
        raise ValueError("out_indices chooses feature maps: pass features_only=True too.")
    try:
        model = info.builder(
            num_classes=0 if features_only else num_classes, dtype=dtype, **overrides
        )
    except TypeError as err:
        raise TypeError(
            f"create_model({name!r}) got an override it does not accept: {err}. "
            f"Check the field names of the {info.family} module."
        ) from None
    if not (features_only or return_features):
        return model
    # The levels of the default model are cached; overrides may change its channels.
    levels = _levels(info, model) if overrides else _feature_info(name)
    return feature_maps.Features(
        model=model,
        levels=feature_maps.select_levels(levels, out_indices, name=name),
        with_logits=return_features,
    )


def _levels(info: ModelInfo, model: nn.Module) -> tuple[FeatureLevel, ...]:
    if info.feature_nodes is None:
        raise ValueError(f"{info.name}: its family names no feature maps (Family.features).")
    nodes = info.feature_nodes
    if info.torchvision is None:
        nodes = dataclasses.replace(nodes, torchvision=None)
    return feature_maps.resolve_levels(model, nodes, resolution=info.resolution, name=info.name)


@functools.cache
def _feature_info(name: str) -> tuple[FeatureLevel, ...]:
    info = model_info(name)
    return _levels(info, info.builder(num_classes=0, dtype=jnp.float32))
