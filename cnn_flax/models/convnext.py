"""ConvNeXt (Liu, Mao, Wu, Feichtenhofer, Darrell and Xie 2022, "A ConvNet for the 2020s").

A ResNet modernised step by step towards the Swin Transformer's design: a 4x4/4 "patchify"
stem, stages of (3, 3, 9, 3) blocks for ConvNeXt-T (Sec. 2.2), each block an inverted
bottleneck with the depthwise 7x7 convolution moved first (Sec. 2.4-2.5), one LayerNorm
(Sec. 2.6) and one GELU, a per-channel "layer scale" (Touvron et al. 2021) initialised to 1e-6,
and stochastic depth; downsampling by a LayerNorm and a 2x2/2 convolution between stages.

This is torchvision's ``convnext_tiny`` ... ``convnext_large``, number for number: LayerNorm
epsilon 1e-6 everywhere, exact GELU, biases on every convolution and linear layer, a LayerNorm
after global pooling in front of the classifier, and the stochastic-depth rate of block ``b`` of
``B`` growing as ``drop_path * b / (B - 1)``. The block's two pointwise layers are dense layers
on the channels-last maps, as in the paper's code. NHWC throughout, so no permutes are needed.

Parameter names: ``stem`` (``conv``, ``norm``), ``stage{s}_block{j}`` (``depthwise``, ``norm``,
``fc1``, ``fc2``, ``layer_scale``), ``downsample{s}`` (``norm``, ``conv``; the transition into
stage ``s``), ``head_norm`` and ``head``.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import Family, Recipe, torchvision_weights
from cnn_flax.models.state_dict import StateDictReader


@dataclasses.dataclass(frozen=True)
class ConvNeXtStage:
    """One stage: ``num_blocks`` blocks at ``features`` channels.

    Attributes:
      features: channels of the stage (before ``width_mult``).
      num_blocks: blocks in the stage.
    """

    features: int
    num_blocks: int


def _stages(widths: tuple[int, ...], depths: tuple[int, ...]) -> tuple[ConvNeXtStage, ...]:
    return tuple(ConvNeXtStage(w, d) for w, d in zip(widths, depths, strict=True))


# The paper's Sec. 3 configurations (torchvision's block settings).
TINY = _stages((96, 192, 384, 768), (3, 3, 9, 3))
SMALL = _stages((96, 192, 384, 768), (3, 3, 27, 3))
BASE = _stages((128, 256, 512, 1024), (3, 3, 27, 3))
LARGE = _stages((192, 384, 768, 1536), (3, 3, 27, 3))

# torchvision initialises every convolution and linear layer with a truncated normal of
# standard deviation 0.02 (truncated at +-2, i.e. +-100 standard deviations) and zero biases.
_init = nn.initializers.normal(0.02)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> LayerNorm -> dense 4x -> GELU -> dense -> layer scale, + residual.

    Attributes:
      conv: bound convolution; norm: bound LayerNorm; dense: bound Dense.
      activation: GELU (exact, as torch's default).
      layer_scale_init: initial value of the per-channel output scale.
      drop_path: stochastic depth rate of the residual branch.
    """

    conv: layers.ModuleDef
    norm: layers.ModuleDef
    dense: layers.ModuleDef
    activation: layers.Activation
    layer_scale_init: float
    drop_path: float

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        features = x.shape[-1]
        y = self.conv(
            features,
            (7, 7),
            padding=((3, 3), (3, 3)),
            feature_group_count=features,
            name="depthwise",
        )(x)
        y = self.norm(name="norm")(y)
        y = self.activation(self.dense(4 * features, name="fc1")(y))
        y = self.dense(features, name="fc2")(y)
        scale = self.param(
            "layer_scale", nn.initializers.constant(self.layer_scale_init), (features,), jnp.float32
        )
        y = y * scale.astype(y.dtype)
        y = layers.DropPath(self.drop_path, name="drop_path")(y, deterministic=not train)
        return x + y


class ConvNeXt(layers.LayerNormContract):
    """ConvNeXt: patchify stem, four stages with downsampling between them, pooled classifier.

    Features (``num_classes=0``): the globally pooled, LayerNorm-ed output of the last stage,
    the input of the classifier.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.LayerNormContract`):
      stages: the stage spec, e.g. :data:`TINY`.
      num_classes: classifier outputs; 0 returns the features.
      width_mult: multiplier on every stage's width (below 1: thin models for experiments).
      drop_path: stochastic depth rate of the last block; block b of B uses rate * b / (B - 1).
      layer_scale_init: initial per-channel scale of every block's output (1e-6).
      patch_size: kernel and stride of the stem.
    """

    stages: tuple[ConvNeXtStage, ...] = TINY
    num_classes: int = 1000
    width_mult: float = 1.0
    drop_path: float = 0.1
    layer_scale_init: float = 1e-6
    patch_size: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("drop_path", self.drop_path)
        conv, norm, _ = layers.bind_contract(self, train=train, use_bias=True, kernel_init=_init)
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_init
        )
        widths = [max(1, round(s.features * self.width_mult)) for s in self.stages]
        total = sum(s.num_blocks for s in self.stages)
        patch = (self.patch_size, self.patch_size)

        x = x.astype(self.dtype)
        x = _ConvNorm(widths[0], patch, conv=conv, norm=norm, norm_first=False, name="stem")(x)
        b = 0
        for s, (stage, width) in enumerate(zip(self.stages, widths, strict=True), start=1):
            if s > 1:
                x = _ConvNorm(width, (2, 2), conv=conv, norm=norm, norm_first=True,
                              name=f"downsample{s}")(x)  # fmt: skip
            for j in range(stage.num_blocks):
                x = ConvNeXtBlock(
                    conv=conv,
                    norm=norm,
                    dense=dense,
                    activation=self.activation,
                    layer_scale_init=self.layer_scale_init,
                    drop_path=self.drop_path * b / max(1, total - 1),
                    name=f"stage{s}_block{j}",
                )(x, train=train)
                b += 1
        x = jnp.mean(x, axis=(1, 2))
        x = norm(name="head_norm")(x)
        return layers.classifier(x, self.num_classes, dtype=self.dtype, kernel_init=_init)


class _ConvNorm(nn.Module):
    """A strided, unpadded convolution with a LayerNorm after it (the stem) or before it
    (the downsampling layers)."""

    features: int
    kernel: tuple[int, int]
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    norm_first: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.norm_first:
            x = self.norm(name="norm")(x)
        x = self.conv(
            self.features, self.kernel, strides=self.kernel, padding="VALID", name="conv"
        )(x)
        return x if self.norm_first else self.norm(name="norm")(x)


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision ConvNeXt state dict -> cnn_flax variables.

    torchvision's ``features`` alternate stages and downsampling layers after the stem:
    ``features.0`` stem, ``features.{2s-1}`` stage ``s``, ``features.{2s-2}`` the downsampling
    into stage ``s``; each block is ``block.0`` (depthwise), ``block.2`` (LayerNorm),
    ``block.3`` / ``block.5`` (the two linear layers) and ``layer_scale`` of shape (C, 1, 1).
    """
    del name
    params: dict = {"stem": {"conv": sd.conv("features.0.0", bias=True)}}
    params["stem"]["norm"] = sd.layer_norm("features.0.1")
    s = 1
    while sd.has(f"features.{2 * s - 1}.0.layer_scale"):
        if s > 1:
            down = f"features.{2 * s - 2}"
            params[f"downsample{s}"] = {
                "norm": sd.layer_norm(f"{down}.0"),
                "conv": sd.conv(f"{down}.1", bias=True),
            }
        j = 0
        while sd.has(f"features.{2 * s - 1}.{j}.layer_scale"):
            prefix = f"features.{2 * s - 1}.{j}"
            params[f"stage{s}_block{j}"] = {
                "depthwise": sd.conv(f"{prefix}.block.0", bias=True),
                "norm": sd.layer_norm(f"{prefix}.block.2"),
                "fc1": sd.dense(f"{prefix}.block.3"),
                "fc2": sd.dense(f"{prefix}.block.5"),
                "layer_scale": np.reshape(sd(f"{prefix}.layer_scale"), (-1,)),
            }
            j += 1
        s += 1
    params["head_norm"] = sd.layer_norm("classifier.0")
    params["head"] = sd.dense("classifier.2")
    return {"params": params}


_PAPER = "Liu et al. 2022, A ConvNet for the 2020s"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stage{i}_block{j}``: ``features.{2i - 1}`` (its stem and
    downsampling layers take the even places)."""
    del name
    return f"features.{2 * int(module[len('stage')]) - 1}"


FAMILY = Family(
    name="convnext",
    reference=_PAPER + "; torchvision convnext",
    mappings={"torchvision": from_torchvision},
    # torchvision references/classification README, "ConvNeXt": its V2 recipe (the base: 600
    # epochs, cosine after 5 warm-up epochs, label smoothing 0.1, mixup 0.2 / cutmix 1.0,
    # TrivialAugment Wide, random erasing 0.1, EMA, repeated augmentation x4, train crop 176)
    # with AdamW lr 1e-3 at batch 1024 and weight decay 0.05, none on norm layers. Each variant
    # is evaluated at the resize torchvision tuned after training (its weights' transform).
    recipe=Recipe(
        base="torchvision_v2",
        overrides={
            "optimizer.name": "adamw",
            "optimizer.lr": 1e-3 * 256 / 1024,
            "optimizer.weight_decay": 0.05,
        },
        source="torchvision references/classification (ConvNeXt): AdamW lr 1e-3, wd 0.05 none "
        "on norms, cosine, 5 warm-up epochs, 600 epochs, label smoothing 0.1, mixup/cutmix, "
        "TrivialAugment Wide, random erasing 0.1, EMA, repeated augmentation x4, crop 176",
        target_source="torchvision IMAGENET1K_V1",
    ),
    features=FeatureNodes(("stage*",), torchvision=_torchvision_node),
)

# name: (stages, torchvision's stochastic depth); the weights' facts are in _PUBLISHED
_VARIANTS = {
    "convnext_tiny": (TINY, 0.1),
    "convnext_small": (SMALL, 0.4),
    "convnext_base": (BASE, 0.5),
    "convnext_large": (LARGE, 0.5),
}
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "convnext_tiny": (
        torchvision_weights("IMAGENET1K_V1", "convnext_tiny-983f1562.pth", 224, 236, "bilinear",
                            82.52, 96.146, 4.456, 28_589_128, 109.119),
    ),
    "convnext_small": (
        torchvision_weights("IMAGENET1K_V1", "convnext_small-0c510722.pth", 224, 230, "bilinear",
                            83.616, 96.65, 8.684, 50_223_688, 191.703),
    ),
    "convnext_base": (
        torchvision_weights("IMAGENET1K_V1", "convnext_base-6075fbad.pth", 224, 232, "bilinear",
                            84.062, 96.87, 15.355, 88_591_464, 338.064),
    ),
    "convnext_large": (
        torchvision_weights("IMAGENET1K_V1", "convnext_large-ea097f82.pth", 224, 232, "bilinear",
                            84.414, 96.976, 34.361, 197_767_336, 754.537),
    ),
}
# fmt: on


for _name, (_stages_spec, _drop_path) in _VARIANTS.items():
    _v1 = _PUBLISHED[_name][0]
    FAMILY.register(
        _name,
        functools.partial(ConvNeXt, stages=_stages_spec, drop_path=_drop_path),
        torchvision=_name,
        weights=_PUBLISHED[_name],
        recipe=FAMILY.recipe.but(
            {"data.eval_resize_size": _v1.transform.resize}, target_top1=_v1.top1
        ),
    )
