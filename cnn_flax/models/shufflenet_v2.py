"""ShuffleNet V2 (Ma, Zhang, Zheng and Sun 2018, "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design").

The paper measures speed instead of FLOPs and derives four guidelines (Sec. 2): equal input and
output widths minimise memory access, group convolutions and network fragmentation cost more than
their FLOPs say, and element-wise operations are not free. Its unit (Sec. 3, Fig. 3c/d) follows
them: a *channel split* sends half the channels through untouched and the other half through
1x1 -> depthwise 3x3 -> 1x1 convolutions at constant width (no groups, no bottleneck), the halves
are concatenated instead of added, and a *channel shuffle* of two groups then mixes them so the
next unit's split sees channels of both. A downsampling unit has no split: both halves see the
whole input, the left one through a strided depthwise 3x3 and a 1x1, and the width doubles.

This is torchvision's ``shufflenet_v2_x0_5`` ... ``x2_0`` (Table 5 widths): a 3x3/2 stem of 24
channels and a 3x3/2 max pool, stages 2-4 of 4, 8 and 4 units, a 1x1 ``conv5`` (1024 channels,
2048 for 2.0x), global pooling and the classifier. BatchNorm after every convolution (epsilon
1e-5, torch momentum 0.1), ReLU after the 1x1 convolutions only (the depthwise ones are linear).

Parameter names (torchvision's in brackets)::

    stem                  {conv, bn}                   conv1.0, conv1.1
    stage{s}_block{j}     branch2 {conv1, depthwise, conv2}   stage{s}.{j}.branch2  (s = 2..4)
                          branch1 {depthwise, conv}           stage{s}.{j}.branch1  (j = 0 only)
    head_conv             {conv, bn}                   conv5.0, conv5.1
    head                  {kernel, bias}               fc
"""

from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import Family, Recipe, torchvision_weights
from cnn_flax.models.state_dict import StateDictReader

# The paper numbers its stages from 2 (Table 5: Conv1 and MaxPool, Stage2-4, Conv5).
FIRST_STAGE = 2
# torchvision leaves ShuffleNet V2 at torch's default initialisation; a convolution's default is
# the same U(+-1/sqrt(fan_in)) as a linear layer's.
_torch_default_init = layers.torch_linear_init


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """Interleaves the channels of ``groups`` equal groups (Zhang et al. 2018, ShuffleNet, Fig. 1).

    Channel ``i`` of group ``g`` moves to position ``i * groups + g``: viewed as a
    ``[groups, C / groups]`` matrix, the channel axis is transposed, as torchvision does on NCHW.
    """
    *rest, channels = x.shape
    if channels % groups:
        raise ValueError(f"channel_shuffle: {channels} channels do not split into {groups} groups.")
    x = x.reshape(*rest, groups, channels // groups)
    return jnp.swapaxes(x, -1, -2).reshape(*rest, channels)


class ShuffleUnit(nn.Module):
    """The ShuffleNet V2 unit (Fig. 3c, stride 1) or its downsampling form (Fig. 3d, stride 2).

    Attributes:
      features: output channels (twice each branch's).
      strides: 1 (channel split, identity left half) or 2 (both halves convolved).
      conv, norm, activation: the bound convolution, normalisation and activation.
    """

    features: int
    strides: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.strides not in (1, 2):
            raise ValueError(f"ShuffleUnit strides must be 1 or 2, got {self.strides}.")
        half = self.features // 2
        if self.strides == 1:
            if x.shape[-1] != self.features or self.features % 2:
                raise ValueError(
                    f"A stride-1 ShuffleUnit keeps an even width: got {x.shape[-1]} channels in, "
                    f"{self.features} out; use strides=2 to change the width."
                )
            left, right = jnp.split(x, 2, axis=-1)
        else:
            left = _Branch1(half, self.strides, self.conv, self.norm, self.activation,
                            name="branch1")(x)  # fmt: skip
            right = x
        right = _Branch2(half, self.strides, self.conv, self.norm, self.activation,
                         name="branch2")(right)  # fmt: skip
        return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class _Branch1(nn.Module):
    """The downsampling unit's left branch: strided depthwise 3x3 (linear) -> 1x1 -> ReLU."""

    features: int
    strides: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cbn = functools.partial(layers.ConvBN, conv=self.conv, norm=self.norm)
        x = cbn(x.shape[-1], 3, strides=self.strides, groups=x.shape[-1], name="depthwise")(x)
        return cbn(self.features, 1, activation=self.activation, name="conv")(x)


class _Branch2(nn.Module):
    """The convolved branch: 1x1 -> ReLU -> depthwise 3x3 (linear) -> 1x1 -> ReLU."""

    features: int
    strides: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cbn = functools.partial(layers.ConvBN, self.features, conv=self.conv, norm=self.norm)
        x = cbn(1, activation=self.activation, name="conv1")(x)
        x = cbn(3, strides=self.strides, groups=self.features, name="depthwise")(x)
        return cbn(1, activation=self.activation, name="conv2")(x)


class ShuffleNetV2(layers.BatchNormContract):
    """ShuffleNet V2: stem and max pool, three stages of shuffle units, 1x1 conv5, classifier.

    Features (``num_classes=0``): the globally pooled output of ``conv5`` (``head_conv``).

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      stage_features: output channels of stages 2, 3 and 4 (Table 5 for each complexity).
      stage_repeats: units per stage; the first of each downsamples.
      stem_features: channels of the 3x3/2 stem.
      head_features: channels of ``conv5``.
      num_classes: classifier outputs; 0 returns the features.
    """

    stage_features: tuple[int, ...] = (116, 232, 464)
    stage_repeats: tuple[int, ...] = (4, 8, 4)
    stem_features: int = 24
    head_features: int = 1024
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if len(self.stage_features) != len(self.stage_repeats):
            raise ValueError(
                f"stage_features {self.stage_features} and stage_repeats {self.stage_repeats} "
                "must have one entry per stage."
            )
        conv, norm, _ = layers.bind_contract(self, train=train, kernel_init=_torch_default_init)
        common = {"conv": conv, "norm": norm, "activation": self.activation}
        x = x.astype(self.dtype)
        x = layers.ConvBN(self.stem_features, 3, strides=2, name="stem", **common)(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        stages = zip(self.stage_features, self.stage_repeats, strict=True)
        for s, (features, repeats) in enumerate(stages, start=FIRST_STAGE):
            for j in range(repeats):
                x = ShuffleUnit(
                    features, strides=2 if j == 0 else 1, name=f"stage{s}_block{j}", **common
                )(x)
        x = layers.ConvBN(self.head_features, 1, name="head_conv", **common)(x)
        return layers.pooled_head(self, x)


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision ShuffleNetV2 state dict -> cnn_flax variables.

    ``branch2`` is ``0`` conv / ``1`` BN (ReLU), ``3`` / ``4`` depthwise, ``5`` / ``6``; the
    downsampling units' ``branch1`` is ``0`` / ``1`` depthwise, ``2`` / ``3``. The layout is read
    from the state dict; the shape check then confirms the variant.
    """
    del name
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("conv1.0", "conv1.1")
    for s in itertools.count(FIRST_STAGE):
        if not sd.has(f"stage{s}.0.branch2.0.weight"):
            break
        for j in itertools.count(0):
            prefix = f"stage{s}.{j}"
            if not sd.has(f"{prefix}.branch2.0.weight"):
                break
            p, b = {"branch2": {}}, {"branch2": {}}
            for ours, i in (("conv1", 0), ("depthwise", 3), ("conv2", 5)):
                p["branch2"][ours], b["branch2"][ours] = sd.conv_bn(
                    f"{prefix}.branch2.{i}", f"{prefix}.branch2.{i + 1}"
                )
            if sd.has(f"{prefix}.branch1.0.weight"):
                p["branch1"], b["branch1"] = {}, {}
                for ours, i in (("depthwise", 0), ("conv", 2)):
                    p["branch1"][ours], b["branch1"][ours] = sd.conv_bn(
                        f"{prefix}.branch1.{i}", f"{prefix}.branch1.{i + 1}"
                    )
            params[f"stage{s}_block{j}"], stats[f"stage{s}_block{j}"] = p, b
    params["head_conv"], stats["head_conv"] = sd.conv_bn("conv5.0", "conv5.1")
    params["head"] = sd.dense("fc")
    return {"params": params, "batch_stats": stats}


# torchvision references/classification README, "ShuffleNet V2" (the command that trained the
# x1_5 and x2_0 weights): its new recipe (the ``torchvision_v2`` base: SGD lr 0.5 at batch 1024,
# cosine after 5 warm-up epochs, 600 epochs, weight decay 2e-5 and none on norm layers, label
# smoothing 0.1, mixup 0.2 / cutmix 1.0, EMA) with TrivialAugment Wide, random erasing 0.1,
# repeated augmentation x4, 176 px training crops and 232/224 evaluation: flag for flag the base.
_TV_RECIPE = Recipe(
    base="torchvision_v2",
    source="torchvision references/classification (ShuffleNet V2): SGD lr 0.5 at batch 1024, "
    "cosine, 5 warm-up epochs, 600 epochs, wd 2e-5, label smoothing 0.1, mixup/cutmix, "
    "TrivialAugment, random erasing 0.1, repeated augmentation x4, EMA, train 176 / eval 232-224",
    target_source="torchvision IMAGENET1K_V1",
)


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stem`` (``conv1``) / ``stage{s}_block{j}`` (``stage{s}``)."""
    del name
    return "conv1" if module == "stem" else module.split("_")[0]


FAMILY = Family(
    name="shufflenet_v2",
    reference="Ma et al. 2018, ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture "
    "Design",
    mappings={"torchvision": from_torchvision},
    recipe=_TV_RECIPE,
    features=FeatureNodes(("stem", "stage*"), torchvision=_torchvision_node),
)

# The 0.5x and 1.0x weights were contributed to torchvision (ported from
# github.com/ericsun99/Shufflenet-v2-Pytorch) without a published recipe: their recipe is the
# 1.5x / 2.0x command, with no target.
_NO_TARGET = _TV_RECIPE.but(
    source=f"{_TV_RECIPE.source} (torchvision's 1.5x/2.0x command; the published 0.5x/1.0x "
    "weights are a community contribution without a recipe)",
    target_source="none: the weights' own recipe is unpublished",
)

# name: (stage widths, conv5 width, recipe) of torchvision's constructor.
_VARIANTS = {
    "shufflenet_v2_x0_5": ((48, 96, 192), 1024, _NO_TARGET),
    "shufflenet_v2_x1_0": ((116, 232, 464), 1024, _NO_TARGET),
    "shufflenet_v2_x1_5": ((176, 352, 704), 1024, _TV_RECIPE),
    "shufflenet_v2_x2_0": ((244, 488, 976), 2048, _TV_RECIPE),
}  # fmt: skip
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "shufflenet_v2_x0_5": (
        torchvision_weights("IMAGENET1K_V1", "shufflenetv2_x0.5-f707e7126e.pth", 224, 256,
                            "bilinear", 60.552, 81.746, 0.04, 1_366_792, 5.282),
    ),
    "shufflenet_v2_x1_0": (
        torchvision_weights("IMAGENET1K_V1", "shufflenetv2_x1-5666bf0f80.pth", 224, 256,
                            "bilinear", 69.362, 88.316, 0.145, 2_278_604, 8.791),
    ),
    "shufflenet_v2_x1_5": (
        torchvision_weights("IMAGENET1K_V1", "shufflenetv2_x1_5-3c479a10.pth", 224, 232,
                            "bilinear", 72.996, 91.086, 0.296, 3_503_624, 13.557),
    ),
    "shufflenet_v2_x2_0": (
        torchvision_weights("IMAGENET1K_V1", "shufflenetv2_x2_0-8be3c8ee.pth", 224, 232,
                            "bilinear", 76.23, 93.006, 0.583, 7_393_996, 28.433),
    ),
}
# fmt: on


for _name, (_widths, _head, _recipe) in _VARIANTS.items():
    FAMILY.register(
        _name,
        functools.partial(ShuffleNetV2, stage_features=_widths, head_features=_head),
        torchvision=_name,
        weights=_PUBLISHED[_name],
        recipe=_recipe
        if _recipe is _NO_TARGET
        else _recipe.but(target_top1=_PUBLISHED[_name][0].top1),
    )
