"""ResNet (He, Zhang, Ren and Sun 2016, "Deep Residual Learning for Image Recognition"), its
ResNeXt (Xie et al. 2017) and Wide ResNet (Zagoruyko and Komodakis 2016) variants, and the
paper's plain (shortcut-free) twins.

One generic :class:`ResNet` covers every variant: the stage sizes, the block (basic or
bottleneck), the grouped width, the stem (ImageNet's 7x7 + max pool or CIFAR's 3x3) and the
shortcut type (the paper's options A and B, or none at all for the plain nets) are fields. The
ImageNet models are registered here and follow torchvision exactly, which means "ResNet v1.5":
the bottleneck strides on its 3x3 convolution, not on the first 1x1 as in the paper, which
torchvision reports as slightly more accurate. The CIFAR-10 models (paper sec. 4.2) are
registered in :mod:`cnn_flax.models.resnet_cifar`.

Parameter names (the checkpoint format) mirror torchvision's modules one to one::

    stem                  {conv, bn}          conv1, bn1
    stage{i}_block{j}     conv1..3 {conv, bn} layer{i}.{j}.conv1..3, bn1..3   (i from 1, j from 0)
                          shortcut {conv, bn} layer{i}.{j}.downsample.0, .1   (projections only)
    head                  {kernel, bias}      fc

A plain twin has the same names without any ``shortcut``, so weights move between the twins.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import (
    Family,
    Recipe,
    Weights,
    timm_weights,
    torchvision_weights,
)
from cnn_flax.models.state_dict import StateDictReader

STEMS = ("imagenet", "cifar")
SHORTCUTS = ("projection", "zero_pad")


def _shortcut(
    x: jax.Array,
    *,
    features: int,
    strides: int,
    kind: str | None,
    conv: layers.ModuleDef,
    norm: layers.ModuleDef,
) -> jax.Array | None:
    """The block's shortcut branch, or ``None`` for a plain (shortcut-free) block.

    ``"projection"`` is the paper's option B (torchvision's ``downsample``): identity where the
    shape is kept, a strided 1x1 convolution + BN where it changes. ``"zero_pad"`` is option A:
    always parameter-free, subsampling by taking every ``strides``-th pixel and appending zero
    channels (as in the paper's CIFAR-10 networks, sec. 4.2).
    """
    if kind is None:
        return None
    in_features = x.shape[-1]
    if strides == 1 and in_features == features:
        return x
    if kind == "projection":
        return layers.ConvBN(features, 1, conv=conv, norm=norm, strides=strides, name="shortcut")(x)
    if in_features > features:
        raise ValueError(
            f"Zero-padding shortcut cannot shrink {in_features} channels to {features}; use "
            "shortcut='projection' for blocks that reduce channels."
        )
    x = x[:, ::strides, ::strides, :]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - in_features)))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR nets), stride on the first.

    Attributes:
      planes: channels of both convolutions.
      conv, norm, activation: the bound convolution, normalisation and activation.
      strides: stride of the first convolution (and of the shortcut).
      shortcut: ``"projection"``, ``"zero_pad"`` or ``None`` (plain block, no addition).
      zero_init_residual: start the last BN's scale at zero so the block starts as the identity
        (Goyal et al. 2017).
      groups, width_per_group: accepted for a uniform block interface; must be 1 and 64.
    """

    expansion: ClassVar[int] = 1

    planes: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation
    strides: int = 1
    shortcut: str | None = "projection"
    zero_init_residual: bool = False
    groups: int = 1
    width_per_group: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.groups != 1 or self.width_per_group != 64:
            raise ValueError(
                f"BasicBlock has no grouped width (got groups={self.groups}, "
                f"width_per_group={self.width_per_group}); use block=Bottleneck for ResNeXt or "
                "Wide ResNet."
            )
        last_norm = _last_norm(self.norm, self.zero_init_residual)
        y = layers.ConvBN(
            self.planes,
            3,
            conv=self.conv,
            norm=self.norm,
            strides=self.strides,
            activation=self.activation,
            name="conv1",
        )(x)
        y = layers.ConvBN(self.planes, 3, conv=self.conv, norm=last_norm, name="conv2")(y)
        identity = _shortcut(
            x,
            features=self.planes,
            strides=self.strides,
            kind=self.shortcut,
            conv=self.conv,
            norm=self.norm,
        )
        return self.activation(y if identity is None else y + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped) and 1x1 expand (ResNet-50 and deeper, ResNeXt, Wide ResNet).

    The stride sits on the 3x3 convolution as in torchvision ("v1.5"); the paper strides the
    first 1x1. The inner width is ``int(planes * width_per_group / 64) * groups``, torchvision's
    rule, which gives ResNeXt-50 32x4d (128 channels in stage 1) and Wide ResNet-50-2 (128).

    Attributes: as :class:`BasicBlock`; the output has ``4 * planes`` channels.
    """

    expansion: ClassVar[int] = 4

    planes: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation
    strides: int = 1
    shortcut: str | None = "projection"
    zero_init_residual: bool = False
    groups: int = 1
    width_per_group: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
        out_features = self.planes * self.expansion
        last_norm = _last_norm(self.norm, self.zero_init_residual)
        cbn = functools.partial(layers.ConvBN, conv=self.conv)
        y = cbn(width, 1, norm=self.norm, activation=self.activation, name="conv1")(x)
        y = cbn(
            width,
            3,
            norm=self.norm,
            strides=self.strides,
            groups=self.groups,
            activation=self.activation,
            name="conv2",
        )(y)
        y = cbn(out_features, 1, norm=last_norm, name="conv3")(y)
        identity = _shortcut(
            x,
            features=out_features,
            strides=self.strides,
            kind=self.shortcut,
            conv=self.conv,
            norm=self.norm,
        )
        return self.activation(y if identity is None else y + identity)


def _last_norm(norm: layers.ModuleDef, zero_init: bool) -> layers.ModuleDef:
    return functools.partial(norm, scale_init=nn.initializers.zeros) if zero_init else norm


class ResNet(layers.BatchNormContract):
    """A residual network (or its plain twin) of ``len(stage_sizes)`` stages.

    Stage ``i`` (from 0) has ``stage_sizes[i]`` blocks of ``base_width * width_mult * 2**i``
    planes; every stage but the first halves the resolution in its first block. Global average
    pooling and one Dense layer (``head``) follow; the pooled features are what
    ``num_classes=0`` returns.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      stage_sizes: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50, ``(3, 3, 3)`` for the
        CIFAR ResNet-20.
      block: :class:`BasicBlock` or :class:`Bottleneck`.
      num_classes: classifier outputs; 0 returns the pooled features.
      base_width: planes of the first stage, doubling per stage (64 for ImageNet, 16 for
        CIFAR).
      width_mult: width multiplier on ``base_width`` (below 1: thin networks for tests and
        experiments).
      groups: convolution groups of the bottleneck's 3x3 (32 for ResNeXt-50 32x4d).
      width_per_group: bottleneck width per group at ``width=64`` (4 for ResNeXt-50 32x4d, 128
        for Wide ResNet-50-2).
      stem: ``"imagenet"`` (7x7/2 convolution + 3x3/2 max pool) or ``"cifar"`` (3x3/1
        convolution, paper sec. 4.2).
      shortcut: ``"projection"`` (paper's option B, torchvision) or ``"zero_pad"`` (option A,
        parameter-free; the paper's CIFAR nets).
      skip_connections: ``False`` builds the paper's plain twin: the same convolutions with no
        shortcut additions and no projection shortcuts (the degradation experiment, Fig. 4/6).
      zero_init_residual: zero the last BN scale of every block (torchvision's option, default
        off as there).
    """

    stage_sizes: tuple[int, ...]
    block: type[BasicBlock] | type[Bottleneck] = BasicBlock
    num_classes: int = 1000
    base_width: int = 64
    width_mult: float = 1.0
    groups: int = 1
    width_per_group: int = 64
    stem: str = "imagenet"
    shortcut: str = "projection"
    skip_connections: bool = True
    zero_init_residual: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        self._check_fields()
        conv, norm, _ = layers.bind_contract(self, train=train)
        width = max(1, round(self.base_width * self.width_mult))
        stem = functools.partial(
            layers.ConvBN, width, conv=conv, norm=norm, activation=self.activation, name="stem"
        )
        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = stem(7, strides=2)(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        else:
            x = stem(3)(x)
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = self.block(
                    planes=width * 2**i,
                    conv=conv,
                    norm=norm,
                    activation=self.activation,
                    strides=2 if i > 0 and j == 0 else 1,
                    shortcut=self.shortcut if self.skip_connections else None,
                    zero_init_residual=self.zero_init_residual,
                    groups=self.groups,
                    width_per_group=self.width_per_group,
                    name=f"stage{i + 1}_block{j}",
                )(x)
        return layers.pooled_head(self, x)

    def _check_fields(self) -> None:
        if self.stem not in STEMS:
            raise ValueError(f"Unknown stem {self.stem!r}; choose one of {STEMS}.")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"Unknown shortcut {self.shortcut!r}; choose one of {SHORTCUTS}.")
        if self.zero_init_residual and not self.skip_connections:
            raise ValueError(
                "zero_init_residual=True with skip_connections=False would zero every block's "
                "output; set zero_init_residual=False for plain networks."
            )


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision ResNet / ResNeXt / Wide ResNet state dict -> cnn_flax variables.

    ``conv1``/``bn1`` -> ``stem``, ``layer{i}.{j}.conv{k}``/``bn{k}`` ->
    ``stage{i}_block{j}.conv{k}``, ``downsample.0``/``.1`` -> ``shortcut``, ``fc`` -> ``head``.
    The block structure is read from the state dict, so one mapping serves every depth and
    width; the shape check then confirms it is the variant asked for. timm's ResNets use the
    same names, so their state dicts load through this mapping too.
    """
    del name
    params: dict = {}
    stats: dict = {}
    params["stem"], stats["stem"] = sd.conv_bn("conv1", "bn1")
    for i in itertools.count(1):
        if not sd.has(f"layer{i}.0.conv1.weight"):
            break
        for j in itertools.count(0):
            prefix = f"layer{i}.{j}"
            if not sd.has(f"{prefix}.conv1.weight"):
                break
            block_params: dict = {}
            block_stats: dict = {}
            for k in itertools.count(1):
                if not sd.has(f"{prefix}.conv{k}.weight"):
                    break
                block_params[f"conv{k}"], block_stats[f"conv{k}"] = sd.conv_bn(
                    f"{prefix}.conv{k}", f"{prefix}.bn{k}"
                )
            if sd.has(f"{prefix}.downsample.0.weight"):
                block_params["shortcut"], block_stats["shortcut"] = sd.conv_bn(
                    f"{prefix}.downsample.0", f"{prefix}.downsample.1"
                )
            params[f"stage{i}_block{j}"] = block_params
            stats[f"stage{i}_block{j}"] = block_stats
    params["head"] = sd.dense("fc")
    return {"params": params, "batch_stats": stats}


_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition"
_V15 = f"{_PAPER}; torchvision's v1.5 (stride on the bottleneck's 3x3)"
_PLAIN = f"{_PAPER}, plain baseline (Table 1 convolutions, no shortcuts)"
_TV_V1 = "torchvision IMAGENET1K_V1 (trained with the older step recipe)"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stem`` (``relu``) or ``stage{i}_block{j}`` (``layer{i}``)."""
    del name
    return "relu" if module == "stem" else f"layer{module[len('stage')]}"


FAMILY = Family(
    name="resnet",
    reference=_PAPER,
    # timm's ResNets (resnet18 ... resnet152, resnext50_32x4d, wide_resnet50_2) are torchvision's
    # networks under torchvision's names.
    mappings={"torchvision": from_torchvision, "timm": from_torchvision},
    recipe=Recipe(
        base="resnet_cosine",
        source="SGD Nesterov, lr 0.1 x B/256, 5 warm-up epochs + cosine, wd 1e-4 off BN/biases, "
        "label smoothing 0.1, 90 epochs (Goyal et al. 2017; He et al. 2019, Bag of Tricks)",
        target_source=_TV_V1,
    ),
    features=FeatureNodes(("stem", "stage*"), torchvision=_torchvision_node),
)

_basic = functools.partial(ResNet, block=BasicBlock)
_bottleneck = functools.partial(ResNet, block=Bottleneck)
_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


# name: (builder kwargs, reference, V1 top-1 (the 90-epoch recipe's target; torchvision's model
# documentation)).
_IMAGENET = {
    "resnet18": (
        {"block": BasicBlock, "stage_sizes": _SIZES[18]},
        _PAPER,
        69.758,
    ),
    "resnet34": (
        {"block": BasicBlock, "stage_sizes": _SIZES[34]},
        _PAPER,
        73.314,
    ),
    "resnet50": (
        {"block": Bottleneck, "stage_sizes": _SIZES[50]},
        _V15,
        76.130,
    ),
    "resnet101": (
        {"block": Bottleneck, "stage_sizes": _SIZES[101]},
        _V15,
        77.374,
    ),
    "resnet152": (
        {"block": Bottleneck, "stage_sizes": _SIZES[152]},
        _V15,
        78.312,
    ),
    "resnext50_32x4d": (
        {"block": Bottleneck, "stage_sizes": _SIZES[50], "groups": 32, "width_per_group": 4},
        "Xie et al. 2017, Aggregated Residual Transformations for Deep Neural Networks",
        77.618,
    ),
    "wide_resnet50_2": (
        {"block": Bottleneck, "stage_sizes": _SIZES[50], "width_per_group": 128},
        "Zagoruyko and Komodakis 2016, Wide Residual Networks; torchvision's bottleneck form",
        78.468,
    ),
}
# torchvision's V2 weights and the stage of its new recipe (pytorch/vision#3995) each was trained
# with, a base of cnn_flax.configs.recipes: ResNet-50's final command (FixRes and repeated
# augmentation x4), "new-recipe" (224 px crops), "new-recipe-with-fixres" (176 px crops).
_V2_BASES = {
    "resnet50": ("torchvision_v2", "vision#3995 comment 1013906621 (ResNet-50 V2 command)"),
    "resnet101": ("torchvision_v2_no_fixres", "vision#3995 new-recipe"),
    "resnet152": ("torchvision_v2_no_fixres", "vision#3995 new-recipe"),
    "resnext50_32x4d": ("torchvision_v2_no_fixres", "vision#3995 new-recipe"),
    "wide_resnet50_2": ("torchvision_v2_fixres", "vision#3995 new-recipe-with-fixres"),
}


def _v2_recipe(name: str, weights: Weights) -> Recipe:
    base, where = _V2_BASES[name]
    return Recipe(
        base=base,
        source=f"torchvision's new recipe ({where}): SGD lr 0.5 at batch 1024, 600 epochs, "
        "cosine, 5 warm-up epochs, wd 2e-5 none on norms, label smoothing 0.1, mixup 0.2 / "
        "cutmix 1.0, TrivialAugment Wide, random erasing 0.1, EMA every 32 steps",
        target_top1=weights.top1,
        target_source=f"torchvision {weights.tag}",
    )


# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "resnet18": (
        torchvision_weights("IMAGENET1K_V1", "resnet18-f37072fd.pth", 224, 256, "bilinear", 69.758,
                            89.078, 1.814, 11_689_512, 44.661),
        timm_weights("resnet18.a1_in1k", 224, 235, "bicubic"),
        timm_weights("resnet18.a2_in1k", 224, 235, "bicubic"),
        timm_weights("resnet18.a3_in1k", 160, 168, "bicubic"),
        timm_weights("resnet18.fb_ssl_yfcc100m_ft_in1k", 224, 256, "bilinear"),
        timm_weights("resnet18.fb_swsl_ig1b_ft_in1k", 224, 256, "bilinear"),
        timm_weights("resnet18.gluon_in1k", 224, 256, "bicubic"),
        timm_weights("resnet18.tv_in1k", 224, 256, "bilinear"),
    ),
    "resnet34": (
        torchvision_weights("IMAGENET1K_V1", "resnet34-b627a593.pth", 224, 256, "bilinear", 73.314,
                            91.42, 3.664, 21_797_672, 83.275),
        timm_weights("resnet34.a1_in1k", 224, 235, "bicubic"),
        timm_weights("resnet34.a2_in1k", 224, 235, "bicubic"),
        timm_weights("resnet34.a3_in1k", 160, 168, "bicubic"),
        timm_weights("resnet34.bt_in1k", 224, 256, "bicubic"),
        timm_weights("resnet34.gluon_in1k", 224, 256, "bicubic"),
        timm_weights("resnet34.ra4_e3600_r224_in1k", 224, 248, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
        timm_weights("resnet34.tv_in1k", 224, 256, "bilinear"),
    ),
    "resnet50": (
        torchvision_weights("IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 224, 232, "bilinear", 80.858,
                            95.434, 4.089, 25_557_032, 97.79),
        torchvision_weights("IMAGENET1K_V1", "resnet50-0676ba61.pth", 224, 256, "bilinear", 76.13,
                            92.862, 4.089, 25_557_032, 97.781),
        timm_weights("resnet50.a1_in1k", 224, 235, "bicubic"),
        timm_weights("resnet50.a1h_in1k", 176, 195, "bicubic"),
        timm_weights("resnet50.a2_in1k", 224, 235, "bicubic"),
        timm_weights("resnet50.a3_in1k", 160, 168, "bicubic"),
        timm_weights("resnet50.am_in1k", 224, 256, "bicubic"),
        timm_weights("resnet50.b1k_in1k", 224, 235, "bicubic"),
        timm_weights("resnet50.b2k_in1k", 224, 235, "bicubic"),
        timm_weights("resnet50.bt_in1k", 224, 256, "bicubic"),
        timm_weights("resnet50.c1_in1k", 224, 235, "bicubic"),
        timm_weights("resnet50.c2_in1k", 224, 235, "bicubic"),
        timm_weights("resnet50.d_in1k", 224, 235, "bicubic"),
        timm_weights("resnet50.fb_ssl_yfcc100m_ft_in1k", 224, 256, "bilinear"),
        timm_weights("resnet50.fb_swsl_ig1b_ft_in1k", 224, 256, "bilinear"),
        timm_weights("resnet50.gluon_in1k", 224, 256, "bicubic"),
        timm_weights("resnet50.ra_in1k", 224, 256, "bicubic"),
        timm_weights("resnet50.ram_in1k", 224, 256, "bicubic"),
        timm_weights("resnet50.tv2_in1k", 176, 201, "bilinear"),
        timm_weights("resnet50.tv_in1k", 224, 256, "bilinear"),
    ),
    "resnet101": (
        torchvision_weights("IMAGENET1K_V2", "resnet101-cd907fc2.pth", 224, 232, "bilinear",
                            81.886, 95.78, 7.801, 44_549_160, 170.53),
        torchvision_weights("IMAGENET1K_V1", "resnet101-63fe2227.pth", 224, 256, "bilinear",
                            77.374, 93.546, 7.801, 44_549_160, 170.511),
        timm_weights("resnet101.a1_in1k", 224, 235, "bicubic"),
        timm_weights("resnet101.a1h_in1k", 224, 235, "bicubic"),
        timm_weights("resnet101.a2_in1k", 224, 235, "bicubic"),
        timm_weights("resnet101.a3_in1k", 160, 168, "bicubic"),
        timm_weights("resnet101.gluon_in1k", 224, 256, "bicubic"),
        timm_weights("resnet101.tv2_in1k", 176, 201, "bilinear"),
        timm_weights("resnet101.tv_in1k", 224, 256, "bilinear"),
    ),
    "resnet152": (
        torchvision_weights("IMAGENET1K_V2", "resnet152-f82ba261.pth", 224, 232, "bilinear",
                            82.284, 96.002, 11.514, 60_192_808, 230.474),
        torchvision_weights("IMAGENET1K_V1", "resnet152-394f9c45.pth", 224, 256, "bilinear",
                            78.312, 94.046, 11.514, 60_192_808, 230.434),
        timm_weights("resnet152.a1_in1k", 224, 235, "bicubic"),
        timm_weights("resnet152.a1h_in1k", 224, 235, "bicubic"),
        timm_weights("resnet152.a2_in1k", 224, 235, "bicubic"),
        timm_weights("resnet152.a3_in1k", 160, 168, "bicubic"),
        timm_weights("resnet152.gluon_in1k", 224, 256, "bicubic"),
        timm_weights("resnet152.tv2_in1k", 176, 201, "bilinear"),
        timm_weights("resnet152.tv_in1k", 224, 256, "bilinear"),
    ),
    "resnext50_32x4d": (
        torchvision_weights("IMAGENET1K_V2", "resnext50_32x4d-1a0047aa.pth", 224, 232, "bilinear",
                            81.198, 95.34, 4.23, 25_028_904, 95.833),
        torchvision_weights("IMAGENET1K_V1", "resnext50_32x4d-7cdf4587.pth", 224, 256, "bilinear",
                            77.618, 93.698, 4.23, 25_028_904, 95.789),
        timm_weights("resnext50_32x4d.a1_in1k", 224, 235, "bicubic"),
        timm_weights("resnext50_32x4d.a1h_in1k", 224, 235, "bicubic"),
        timm_weights("resnext50_32x4d.a2_in1k", 224, 235, "bicubic"),
        timm_weights("resnext50_32x4d.a3_in1k", 160, 168, "bicubic"),
        timm_weights("resnext50_32x4d.fb_ssl_yfcc100m_ft_in1k", 224, 256, "bilinear"),
        timm_weights("resnext50_32x4d.fb_swsl_ig1b_ft_in1k", 224, 256, "bilinear"),
        timm_weights("resnext50_32x4d.gluon_in1k", 224, 256, "bicubic"),
        timm_weights("resnext50_32x4d.ra_in1k", 224, 256, "bicubic"),
        timm_weights("resnext50_32x4d.tv2_in1k", 176, 201, "bilinear"),
        timm_weights("resnext50_32x4d.tv_in1k", 224, 256, "bilinear"),
    ),
    "wide_resnet50_2": (
        torchvision_weights("IMAGENET1K_V2", "wide_resnet50_2-9ba9bcbe.pth", 224, 232, "bilinear",
                            81.602, 95.758, 11.398, 68_883_240, 263.124),
        torchvision_weights("IMAGENET1K_V1", "wide_resnet50_2-95faca4d.pth", 224, 256, "bilinear",
                            78.468, 94.086, 11.398, 68_883_240, 131.82),
        timm_weights("wide_resnet50_2.racm_in1k", 224, 256, "bicubic"),
        timm_weights("wide_resnet50_2.tv2_in1k", 176, 201, "bilinear"),
        timm_weights("wide_resnet50_2.tv_in1k", 224, 256, "bilinear"),
    ),
}
# fmt: on


def _trained_by_v2(weights: tuple[Weights, ...]) -> tuple[Weights, ...]:
    return tuple(
        dataclasses.replace(w, recipe="v2") if w.tag == "IMAGENET1K_V2" else w for w in weights
    )


for _name, (_kwargs, _reference, _target) in _IMAGENET.items():
    _weights = _PUBLISHED[_name]
    _v2 = {"v2": _v2_recipe(_name, _weights[0])} if _name in _V2_BASES else {}
    FAMILY.register(
        _name,
        functools.partial(ResNet, **_kwargs),
        reference=_reference,
        torchvision=_name,
        weights=_trained_by_v2(_weights) if _v2 else _weights,
        recipe=FAMILY.recipe.but(target_top1=_target),
        recipes=_v2,
    )

# The paper prints FLOPs but no parameter counts for its plain nets; tests/models/test_resnet.py
# checks that each has its residual twin's count minus the projection shortcuts. Targets: 100 -
# He et al. 2016 Table 2 top-1 error (10-crop); plain50 has no published number.
for _depth, _builder, _target in (
    (18, _basic, 72.06),
    (34, _basic, 71.46),
    (50, _bottleneck, None),
):
    FAMILY.register(
        f"plain{_depth}",
        functools.partial(_builder, stage_sizes=_SIZES[_depth], skip_connections=False),
        reference=_PLAIN if _depth < 50 else f"{_PLAIN}; bottleneck plain net (not in the paper)",
        recipe=FAMILY.recipe.but(
            target_top1=_target, target_source="He et al. 2016 Table 2 (10-crop)"
        ),
    )
