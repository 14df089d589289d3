"""MobileNet v1 (Howard et al. 2017) and MobileNet v2 (Sandler et al. 2018).

MobileNet v1 ("MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications") stacks depthwise-separable convolutions: a 3x3 depthwise convolution and a 1x1
pointwise convolution, each followed by BatchNorm and ReLU (the paper's Table 1 and Fig. 3).
torchvision has no MobileNet v1, so the variants are checked against the paper's parameter counts
(Table 4 and Table 6). Its reference weights are TF-slim's, so it pads like TensorFlow's "SAME" by
default (``padding="tf_same"``).

MobileNet v2 ("MobileNetV2: Inverted Residuals and Linear Bottlenecks") is torchvision's
``mobilenet_v2``, number for number: inverted residual blocks with ReLU6 and linear bottlenecks,
channel counts rounded with ``make_divisible`` under a width multiplier.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.inverted_residual import (
    InvertedResidual,
    MBConvSpec,
    timm_stages,
    torchvision_v2_block,
)
from cnn_flax.models.registry import (
    Family,
    Recipe,
    timm_weights,
    torchvision_weights,
)
from cnn_flax.models.state_dict import StateDictReader

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


def v1_width(channels: int, width_mult: float, min_features: int = 8) -> int:
    """Thins a layer by the width multiplier (the paper's alpha, Sec. 3.3) as TF-slim does.

    ``max(int(channels * width_mult), 8)``: plain truncation, not ``make_divisible``, so 0.75
    gives 24-48-...-768 channels.
    """
    return max(int(channels * width_mult), min_features)


class MobileNetV1(layers.BatchNormContract):
    """MobileNet v1: a stride-2 3x3 stem, 13 separable blocks, global pooling and a classifier.

    With ``separable=False`` each depthwise-separable pair becomes one full 3x3 convolution from
    the pair's input width to its output width, with the depthwise layer's stride: the paper's
    "Conv MobileNet" of Table 4 (29.3M parameters against 4.2M).

    BatchNorm uses torchvision's convention (epsilon 1e-5, torch momentum 0.1) like every other
    cnn_flax model; the TF-slim release used epsilon 1e-3 and decay 0.9997 (``bn_epsilon`` and
    ``bn_momentum`` set them). The classifier is a Dense layer (TF-slim's 1x1 convolution has the
    same parameters) behind TF-slim's dropout of 0.001 (keep probability 0.999).

    Features (``num_classes=0``): the globally pooled output of the last block.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      num_classes: classifier outputs; 0 returns the features.
      width_mult: width multiplier (the paper's alpha) on every layer, stem and last block
        included.
      separable: depthwise-separable blocks (True) or full 3x3 convolutions (False).
      blocks: (output channels, stride) of each block before width scaling.
      stem_features: stem channels before width scaling.
      dropout: dropout in front of the classifier.
      activation: activation after every BatchNorm.
      padding: convolution padding (:data:`cnn_flax.models.layers.PADDINGS`); TF "SAME"
        (``"tf_same"``) by default, as the TF-slim reference whose weights MobileNet v1 has.
    """

    num_classes: int = 1000
    width_mult: float = 1.0
    separable: bool = True
    blocks: tuple[tuple[int, int], ...] = V1_BLOCKS
    stem_features: int = 32
    dropout: float = 0.001
    padding: str = "tf_same"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if not 0.0 < self.width_mult <= 4.0:
            raise ValueError(f"MobileNetV1 width_mult must be in (0, 4], got {self.width_mult}.")
        layers.check_rate("dropout", self.dropout)
        conv, norm, _ = layers.bind_contract(self, train=train, padding=self.padding)
        conv_bn = functools.partial(layers.ConvBN, conv=conv, norm=norm, activation=self.activation)
        x = x.astype(self.dtype)
        x = conv_bn(v1_width(self.stem_features, self.width_mult), 3, strides=2, name="stem")(x)
        for k, (features, stride) in enumerate(self.blocks, start=1):
            features = v1_width(features, self.width_mult)
            if self.separable:
                block = _SeparableBlock(features, stride, conv_bn=conv_bn, name=f"block{k}")
            else:
                block = _FullConvBlock(features, stride, conv_bn=conv_bn, name=f"block{k}")
            x = block(x)
        return layers.pooled_head(
            self, x, dropout=self.dropout, train=train, kernel_init=_HEAD_INIT
        )


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


# torchvision's MobileNets initialise classifiers with N(0, 0.01).
_HEAD_INIT = nn.initializers.normal(0.01)


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


class MobileNetV2(layers.BatchNormContract):
    """MobileNet v2 as torchvision builds it.

    Stem 3x3/2 to 32 channels, 17 inverted residual blocks (Table 2), a 1x1 convolution to 1280
    channels, global pooling, dropout and a linear classifier. The width multiplier scales every
    width through ``make_divisible(c * width_mult, round_nearest)`` except the last convolution,
    which is never thinned below 1280 (Sec. 6.1). Features (``num_classes=0``): the pooled
    output of that last convolution.

    Parameter names: ``stem``, ``block1`` ... ``block17`` (torchvision's ``features.1`` ...
    ``features.17``; each with ``expand``, ``depthwise``, ``project``), ``head_conv``, ``head``.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      num_classes: classifier outputs; 0 returns the features.
      width_mult: width multiplier.
      round_nearest: channel counts are multiples of this.
      stages: the (t, c, n, s) table as :class:`MBConvSpec` rows.
      stem_features: stem channels before width scaling.
      head_features: channels of the last convolution before width scaling.
      dropout: dropout in front of the classifier.
      activation: ReLU6, chosen in the paper for low-precision robustness.
      padding: convolution padding (:data:`cnn_flax.models.layers.PADDINGS`): ``"symmetric"`` as
        torchvision, ``"tf_same"`` for weights trained in TensorFlow.
    """

    num_classes: int = 1000
    width_mult: float = 1.0
    round_nearest: int = 8
    stages: tuple[MBConvSpec, ...] = V2_STAGES
    stem_features: int = 32
    head_features: int = 1280
    dropout: float = 0.2
    activation: layers.Activation = layers.family_default(jax.nn.relu6)
    padding: str = "symmetric"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("dropout", self.dropout)
        conv, norm, act = layers.bind_contract(self, train=train, padding=self.padding)

        def width(c: float) -> int:
            return layers.make_divisible(c * self.width_mult, self.round_nearest)

        x = x.astype(self.dtype)
        x = layers.ConvBN(
            width(self.stem_features),
            3,
            conv=conv,
            norm=norm,
            strides=2,
            activation=act,
            name="stem",
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
                    activation=act,
                    name=f"block{k}",
                )(x, train=train)
        head_features = layers.make_divisible(
            self.head_features * max(1.0, self.width_mult), self.round_nearest
        )
        x = layers.ConvBN(head_features, 1, conv=conv, norm=norm, activation=act, name="head_conv")(
            x
        )
        return layers.pooled_head(
            self, x, dropout=self.dropout, train=train, kernel_init=_HEAD_INIT
        )


def v2_from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision ``mobilenet_v2`` state dict -> cnn_flax variables."""
    if name != "mobilenet_v2":
        raise ValueError(f"No torchvision mapping for {name!r}; only mobilenet_v2 has one.")
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("features.0.0", "features.0.1")
    k = 1
    # features.1 .. features.N-1 are blocks; the last entry is the 1x1 head convolution.
    while sd.has(f"features.{k}.conv.0.0.weight"):
        params[f"block{k}"], stats[f"block{k}"] = torchvision_v2_block(sd, f"features.{k}.conv")
        k += 1
    params["head_conv"], stats["head_conv"] = sd.conv_bn(f"features.{k}.0", f"features.{k}.1")
    params["head"] = sd.dense("classifier.1")
    return {"params": params, "batch_stats": stats}


def v2_from_timm(name: str, sd: StateDictReader) -> dict:
    """timm ``mobilenetv2_100`` state dict -> cnn_flax variables (timm's blocks are by stage)."""
    if name != "mobilenet_v2":
        raise ValueError(f"No timm mapping for {name!r}; only mobilenet_v2 has one.")
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("conv_stem", "bn1")
    blocks = [block for stage in timm_stages(sd) for block in stage]
    for k, (block_params, block_stats) in enumerate(blocks, start=1):
        params[f"block{k}"], stats[f"block{k}"] = block_params, block_stats
    params["head_conv"], stats["head_conv"] = sd.conv_bn("conv_head", "bn2")
    params["head"] = sd.dense("classifier")
    return {"params": params, "batch_stats": stats}


_V1_REF = "Howard et al. 2017, MobileNets (Table 6 width multipliers; Table 4 full convolution)"
_TF_TPU = "TF TPU reference recipe (RMSProp, exponential decay, EMA; tensorflow/tpu mnasnet)"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's MobileNet v2 node for our ``stem`` / ``block{k}``: ``features.{k}``."""
    del name
    return "features.0" if module == "stem" else f"features.{module[len('block') :]}"


FAMILY = Family(
    name="mobilenet",
    reference=_V1_REF,
    # timm's mobilenetv1_100 is another network (ReLU6), so v1 has no timm mapping.
    mappings={"torchvision": v2_from_torchvision, "timm": v2_from_timm},
    # The v1 and v2 papers' weight decay 4e-5 (Howard et al. 2017; Sandler et al. 2018, sec.
    # 6.1) and no AutoAugment; dropout is the model's own default (v1 0.001, v2 0.2).
    recipe=Recipe(
        base="tf_tpu",
        overrides={"optimizer.weight_decay": 4e-5},
        source=f"{_TF_TPU} with the papers' weight decay 4e-5",
        target_source="Howard et al. 2017, Tables 4 and 6",
    ),
    features=FeatureNodes(("stem", "block*"), torchvision=_torchvision_node),
)

FAMILY.register(
    "mobilenet_v1",
    MobileNetV1,
    paper_params="4.2M",
    recipe=FAMILY.recipe.but(target_top1=70.6),
)
for _mult, _suffix, _params, _top1 in (
    (0.75, "075", "2.6M", 68.4),
    (0.5, "050", "1.3M", 63.7),
    (0.25, "025", "0.5M", 50.6),
):
    FAMILY.register(
        f"mobilenet_v1_{_suffix}",
        functools.partial(MobileNetV1, width_mult=_mult),
        paper_params=_params,
        recipe=FAMILY.recipe.but(target_top1=_top1),
    )
FAMILY.register(
    "mobilenet_v1_full_conv",
    functools.partial(MobileNetV1, separable=False),
    paper_params="29.3M",
    recipe=FAMILY.recipe.but(target_top1=71.7),
)
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "mobilenet_v2": (
        torchvision_weights("IMAGENET1K_V2", "mobilenet_v2-7ebf99e0.pth", 224, 232, "bilinear",
                            72.154, 90.822, 0.301, 3_504_872, 13.598, recipe="v2"),
        torchvision_weights("IMAGENET1K_V1", "mobilenet_v2-b0353104.pth", 224, 256, "bilinear",
                            71.878, 90.286, 0.301, 3_504_872, 13.555),
        timm_weights("mobilenetv2_100.ra_in1k", 224, 256, "bicubic"),
    ),
}
# fmt: on


FAMILY.register(
    "mobilenet_v2",
    MobileNetV2,
    reference="Sandler et al. 2018, MobileNetV2; torchvision mobilenet_v2",
    torchvision="mobilenet_v2",
    weights=_PUBLISHED["mobilenet_v2"],
    recipe=FAMILY.recipe.but(
        target_top1=72.0, target_source="Sandler et al. 2018 (torchvision's V1 weights: 71.878)"
    ),
    # pytorch/vision#5560 trained the V2 weights with the ResNet-50 V2 command, flag for flag.
    recipes={
        "v2": Recipe(
            base="torchvision_v2",
            source="torchvision's new recipe (pytorch/vision#5560, the IMAGENET1K_V2 weights): SGD "
            "lr 0.5 at batch 1024, 600 epochs, cosine, 5 warm-up epochs, wd 2e-5 none on norms, "
            "label smoothing 0.1, mixup 0.2 / cutmix 1.0, TrivialAugment Wide, random erasing "
            "0.1, EMA every 32 steps, repeated augmentation x4, train 176 / eval 232-224",
            target_top1=72.154,
            target_source="torchvision IMAGENET1K_V2",
        )
    },
)
