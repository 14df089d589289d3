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

import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.registry import register

STEMS = ("imagenet", "cifar")
SHORTCUTS = ("projection", "zero_pad")

# torch.nn.Linear's default: weights uniform in +-1/sqrt(fan_in), as torchvision leaves ``fc``.
_head_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


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
      conv, norm, act: the bound convolution, normalisation and activation.
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
    act: layers.Activation
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
            act=self.act,
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
        return self.act(y if identity is None else y + identity)


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
    act: layers.Activation
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
        y = cbn(width, 1, norm=self.norm, act=self.act, name="conv1")(x)
        y = cbn(
            width,
            3,
            norm=self.norm,
            strides=self.strides,
            groups=self.groups,
            act=self.act,
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
        return self.act(y if identity is None else y + identity)


def _last_norm(norm: layers.ModuleDef, zero_init: bool) -> layers.ModuleDef:
    return functools.partial(norm, scale_init=nn.initializers.zeros) if zero_init else norm


class ResNet(nn.Module):
    """A residual network (or its plain twin) of ``len(stage_sizes)`` stages.

    Stage ``i`` (from 0) has ``stage_sizes[i]`` blocks of ``width * 2**i`` planes; every stage
    but the first halves the resolution in its first block. Global average pooling and one
    Dense layer (``head``) follow.

    Attributes:
      stage_sizes: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50, ``(3, 3, 3)`` for the
        CIFAR ResNet-20.
      block: :class:`BasicBlock` or :class:`Bottleneck`.
      num_classes: classifier outputs.
      width: planes of the first stage, doubling per stage (64 for ImageNet, 16 for CIFAR);
        smaller values give thin networks for tests and experiments.
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
      dtype: computation dtype; parameters and BN statistics stay float32.
      conv, norm, act: convolution, normalisation and activation modules, bound once here.
    """

    stage_sizes: tuple[int, ...]
    block: type[BasicBlock] | type[Bottleneck] = BasicBlock
    num_classes: int = 1000
    width: int = 64
    groups: int = 1
    width_per_group: int = 64
    stem: str = "imagenet"
    shortcut: str = "projection"
    skip_connections: bool = True
    zero_init_residual: bool = False
    dtype: jnp.dtype = jnp.float32
    conv: layers.ModuleDef = nn.Conv
    norm: layers.ModuleDef = nn.BatchNorm
    act: layers.Activation = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        self._check_fields()
        conv = layers.bind_conv(self.conv, dtype=self.dtype)
        norm = layers.bind_norm(self.norm, train=train, dtype=self.dtype)
        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = layers.ConvBN(
                self.width, 7, conv=conv, norm=norm, strides=2, act=self.act, name="stem"
            )(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        else:
            x = layers.ConvBN(self.width, 3, conv=conv, norm=norm, act=self.act, name="stem")(x)
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = self.block(
                    planes=self.width * 2**i,
                    conv=conv,
                    norm=norm,
                    act=self.act,
                    strides=2 if i > 0 and j == 0 else 1,
                    shortcut=self.shortcut if self.skip_connections else None,
                    zero_init_residual=self.zero_init_residual,
                    groups=self.groups,
                    width_per_group=self.width_per_group,
                    name=f"stage{i + 1}_block{j}",
                )(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=_head_kernel_init,
            name="head",
        )(x)
        return layers.to_float32_logits(x)

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


_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition"
_V15 = f"{_PAPER}; torchvision's v1.5 (stride on the bottleneck's 3x3)"
_PLAIN = f"{_PAPER}, plain baseline (Table 1 convolutions, no shortcuts)"
# crop / resize of torchvision's default (IMAGENET1K_V2) weights for the bottleneck models.
_V2_CROP = 224 / 232

_basic = functools.partial(ResNet, block=BasicBlock)
_bottleneck = functools.partial(ResNet, block=Bottleneck)
_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

for _depth, _builder, _crop in (
    (18, _basic, 0.875),
    (34, _basic, 0.875),
    (50, _bottleneck, _V2_CROP),
    (101, _bottleneck, _V2_CROP),
    (152, _bottleneck, _V2_CROP),
):
    register(
        f"resnet{_depth}",
        functools.partial(_builder, stage_sizes=_SIZES[_depth]),
        family="resnet",
        reference=_PAPER if _depth < 50 else _V15,
        torchvision=f"resnet{_depth}",
        eval_crop_ratio=_crop,
    )
register(
    "resnext50_32x4d",
    functools.partial(_bottleneck, stage_sizes=_SIZES[50], groups=32, width_per_group=4),
    family="resnet",
    reference="Xie et al. 2017, Aggregated Residual Transformations for Deep Neural Networks",
    torchvision="resnext50_32x4d",
    eval_crop_ratio=_V2_CROP,
)
register(
    "wide_resnet50_2",
    functools.partial(_bottleneck, stage_sizes=_SIZES[50], width_per_group=128),
    family="resnet",
    reference="Zagoruyko and Komodakis 2016, Wide Residual Networks; torchvision's bottleneck form",
    torchvision="wide_resnet50_2",
    eval_crop_ratio=_V2_CROP,
)
# The paper prints FLOPs but no parameter counts for its plain nets; tests/models/test_resnet.py
# checks that each has its residual twin's count minus the projection shortcuts.
for _depth, _builder in ((18, _basic), (34, _basic), (50, _bottleneck)):
    register(
        f"plain{_depth}",
        functools.partial(_builder, stage_sizes=_SIZES[_depth], skip_connections=False),
        family="resnet",
        reference=_PLAIN if _depth < 50 else f"{_PLAIN}; bottleneck plain net (not in the paper)",
    )
