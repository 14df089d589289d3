"""MobileNet v1 (Howard et al. 2017) and MobileNet v2 (Sandler et al. 2018).

MobileNet v1 ("MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications") stacks depthwise-separable convolutions: a 3x3 depthwise convolution and a 1x1
pointwise convolution, each followed by BatchNorm and ReLU (the paper's Table 1 and Fig. 3).
torchvision has no MobileNet v1, so the variants are checked against the paper's parameter counts
(Table 4 and Table 6).

MobileNet v2 ("MobileNetV2: Inverted Residuals and Linear Bottlenecks") is torchvision's
``mobilenet_v2``, number for number: inverted residual blocks with ReLU6 and linear bottlenecks,
channel counts rounded with ``make_divisible`` under a width multiplier.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.inverted_residual import InvertedResidual, MBConvSpec
from cnn_flax.models.registry import register

# MobileNet v1, Table 1: (pointwise output channels, depthwise stride) of the 13 separable layers.
# The paper's table prints stride 2 for the last depthwise layer, but its output stays 7x7 and the
# reference TF-slim code uses stride 1 there, as do we.
V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def v1_width(channels: int, alpha: float, min_features: int = 8) -> int:
    """Thins a layer by the width multiplier alpha (Sec. 3.3), as the TF-slim reference does.

    ``max(int(channels * alpha), 8)``: plain truncation, not ``make_divisible``, so alpha = 0.75
    gives 24-48-...-768 channels.
    """
    return max(int(channels * alpha), min_features)


class MobileNetV1(nn.Module):
    """MobileNet v1: a stride-2 3x3 stem, 13 separable blocks, global pooling and a classifier.

    With ``separable=False`` each depthwise-separable pair becomes one full 3x3 convolution from
    the pair's input width to its output width, with the depthwise layer's stride: the paper's
    "Conv MobileNet" of Table 4 (29.3M parameters against 4.2M).

    BatchNorm uses torchvision's convention (epsilon 1e-5, torch momentum 0.1) like every other
    cnn_flax model; the TF-slim release used epsilon 1e-3 and decay 0.9997 (``bn_epsilon`` and
    ``bn_momentum`` set them). The classifier is a Dense layer (TF-slim's 1x1 convolution has the
    same parameters) behind TF-slim's dropout of 0.001 (keep probability 0.999).

    Attributes:
      num_classes: classifier outputs.
      alpha: width multiplier applied to every layer, stem and last block included.
      separable: depthwise-separable blocks (True) or full 3x3 convolutions (False).
      blocks: (output channels, stride) of each block before width scaling.
      stem_features: stem channels before width scaling.
      dropout_rate: dropout in front of the classifier.
      bn_momentum: Flax BatchNorm momentum (1 - torch momentum).
      bn_epsilon: BatchNorm epsilon.
      dtype: computation dtype; parameters stay float32.
      conv: convolution module.
      norm: normalisation module.
      activation: activation after every BatchNorm.
    """

    num_classes: int = 1000
    alpha: float = 1.0
    separable: bool = True
    blocks: tuple[tuple[int, int], ...] = V1_BLOCKS
    stem_features: int = 32
    dropout_rate: float = 0.001
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: jnp.dtype = jnp.float32
    conv: layers.ModuleDef = nn.Conv
    norm: layers.ModuleDef = nn.BatchNorm
    activation: layers.Activation = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if not 0.0 < self.alpha <= 4.0:
            raise ValueError(f"MobileNetV1 alpha must be in (0, 4], got {self.alpha}.")
        conv = layers.bind_conv(self.conv, dtype=self.dtype)
        norm = layers.bind_norm(
            self.norm,
            train=train,
            dtype=self.dtype,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
        )
        conv_bn = functools.partial(layers.ConvBN, conv=conv, norm=norm, act=self.activation)
        x = x.astype(self.dtype)
        x = conv_bn(v1_width(self.stem_features, self.alpha), 3, strides=2, name="stem")(x)
        for k, (features, stride) in enumerate(self.blocks, start=1):
            features = v1_width(features, self.alpha)
            if self.separable:
                block = _SeparableBlock(features, stride, conv_bn=conv_bn, name=f"block{k}")
            else:
                block = _FullConvBlock(features, stride, conv_bn=conv_bn, name=f"block{k}")
            x = block(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = _dense(self.num_classes, self.dtype, name="head")(x)
        return layers.to_float32_logits(x)


class _SeparableBlock(nn.Module):
    """3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU (Fig. 3, right)."""

    features: int
    strides: int
    conv_bn: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        x = self.conv_bn(channels, 3, strides=self.strides, groups=channels, name="depthwise")(x)
        return self.conv_bn(self.features, 1, name="pointwise")(x)


class _FullConvBlock(nn.Module):
    """One full 3x3 conv-BN-ReLU in place of a separable pair (Fig. 3, left; Table 4)."""

    features: int
    strides: int
    conv_bn: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv_bn(self.features, 3, strides=self.strides, name="full_conv")(x)


def _dense(features: int, dtype: jnp.dtype, *, name: str) -> nn.Dense:
    # torchvision's MobileNets initialise classifiers with N(0, 0.01).
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(0.01),
        name=name,
    )


# MobileNet v2, Table 2: (t, c, n, s) rows; every depthwise kernel is 3x3.
V2_STAGES: tuple[MBConvSpec, ...] = (
    MBConvSpec(expand_ratio=1, kernel_size=3, strides=1, features=16, repeats=1),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=2, features=24, repeats=2),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=2, features=32, repeats=3),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=2, features=64, repeats=4),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=1, features=96, repeats=3),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=2, features=160, repeats=3),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=1, features=320, repeats=1),
)


class MobileNetV2(nn.Module):
    """MobileNet v2 as torchvision builds it.

    Stem 3x3/2 to 32 channels, 17 inverted residual blocks (Table 2), a 1x1 convolution to 1280
    channels, global pooling, dropout and a linear classifier. The width multiplier scales every
    width through ``make_divisible(c * width_mult, round_nearest)`` except the last convolution,
    which is never thinned below 1280 (Sec. 6.1).

    Parameter names: ``stem``, ``block1`` ... ``block17`` (torchvision's ``features.1`` ...
    ``features.17``; each with ``expand``, ``depthwise``, ``project``), ``head_conv``, ``head``.

    Attributes:
      num_classes: classifier outputs.
      width_mult: width multiplier.
      round_nearest: channel counts are multiples of this.
      stages: the (t, c, n, s) table as :class:`MBConvSpec` rows.
      stem_features: stem channels before width scaling.
      head_features: channels of the last convolution before width scaling.
      dropout_rate: dropout in front of the classifier.
      dtype: computation dtype; parameters stay float32.
      conv: convolution module.
      norm: normalisation module.
      activation: ReLU6, chosen in the paper for low-precision robustness.
    """

    num_classes: int = 1000
    width_mult: float = 1.0
    round_nearest: int = 8
    stages: tuple[MBConvSpec, ...] = V2_STAGES
    stem_features: int = 32
    head_features: int = 1280
    dropout_rate: float = 0.2
    dtype: jnp.dtype = jnp.float32
    conv: layers.ModuleDef = nn.Conv
    norm: layers.ModuleDef = nn.BatchNorm
    activation: layers.Activation = jax.nn.relu6

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = layers.bind_conv(self.conv, dtype=self.dtype)
        norm = layers.bind_norm(self.norm, train=train, dtype=self.dtype)
        act = self.activation

        def width(c: float) -> int:
            return layers.make_divisible(c * self.width_mult, self.round_nearest)

        x = x.astype(self.dtype)
        x = layers.ConvBN(
            width(self.stem_features), 3, conv=conv, norm=norm, strides=2, act=act, name="stem"
        )(x)
        k = 0
        for spec in self.stages:
            features = width(spec.features)
            for j in range(spec.repeats):
                k += 1
                x = InvertedResidual(
                    features,
                    # torchvision: hidden_dim = int(round(inp * expand_ratio)).
                    expand_features=int(round(x.shape[-1] * spec.expand_ratio)),
                    kernel_size=spec.kernel_size,
                    strides=spec.strides if j == 0 else 1,
                    conv=conv,
                    norm=norm,
                    act=act,
                    name=f"block{k}",
                )(x, train=train)
        head_features = layers.make_divisible(
            self.head_features * max(1.0, self.width_mult), self.round_nearest
        )
        x = layers.ConvBN(head_features, 1, conv=conv, norm=norm, act=act, name="head_conv")(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = _dense(self.num_classes, self.dtype, name="head")(x)
        return layers.to_float32_logits(x)


_V1_REF = "Howard et al. 2017, MobileNets (Table 6 width multipliers; Table 4 full convolution)"

register("mobilenet_v1", MobileNetV1, family="mobilenet", reference=_V1_REF, paper_params="4.2M")
for _alpha, _suffix, _params in (
    (0.75, "075", "2.6M"),
    (0.5, "050", "1.3M"),
    (0.25, "025", "0.5M"),
):
    register(
        f"mobilenet_v1_{_suffix}",
        functools.partial(MobileNetV1, alpha=_alpha),
        family="mobilenet",
        reference=_V1_REF,
        paper_params=_params,
    )
register(
    "mobilenet_v1_full_conv",
    functools.partial(MobileNetV1, separable=False),
    family="mobilenet",
    reference=_V1_REF,
    paper_params="29.3M",
)
register(
    "mobilenet_v2",
    MobileNetV2,
    family="mobilenet",
    reference="Sandler et al. 2018, MobileNetV2; torchvision mobilenet_v2",
    torchvision="mobilenet_v2",
    eval_crop_ratio=224 / 232,
)
