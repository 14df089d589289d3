"""EfficientNetV2 (Tan & Le 2021, "EfficientNetV2: Smaller Models and Faster Training").

A training-aware architecture search over EfficientNet's space, enlarged with the Fused-MBConv
block (Sec. 3.2, Fig. 2): the expansion 1x1 and the depthwise kxk convolution of MBConv fused
into one regular kxk convolution, which runs faster on accelerators in the early, high-resolution
stages even though it has more FLOPs. The searched EfficientNetV2-S (Table 4) uses Fused-MBConv
in its first three stages and MBConv with squeeze-and-excitation after them, smaller expansion
ratios, 3x3 kernels only, and no stride-1 stage of 320 channels at the end; M and L scale it up
non-uniformly (Sec. 4.3). Stage tables here are a tuple of :class:`FusedMBConvSpec` and
:class:`MBConvSpec`.

These are torchvision's ``efficientnet_v2_s`` / ``_m`` / ``_l``, number for number: SiLU
everywhere (squeeze-and-excitation too, a quarter of the block's input width), BatchNorm epsilon
1e-3 (torch momentum 0.1), a 1x1 head convolution to 1280 channels, stochastic depth whose rate
grows linearly to 0.2 over the blocks, and dropout 0.2 / 0.3 / 0.4 in front of the classifier.
The paper's progressive learning (Sec. 4.2: image size and regularisation growing during
training) is a training schedule, not part of the network; torchvision trained S and M at one
size (300 / 384 px) and evaluates at 384 / 480 px.

Parameter names: ``stem``, ``stage{s}_block{j}`` (torchvision's ``features.{s}.{j}``, stages
from 1, blocks from 0; a Fused-MBConv block has ``expand`` and ``project``, or only ``conv`` when
it does not expand; an MBConv block has ``expand``, ``depthwise``, ``se`` and ``project``),
``head_conv`` and ``head``.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.inverted_residual import (
    InvertedResidual,
    MBConvSpec,
    torchvision_sequential_block,
)
from cnn_flax.models.registry import Family, Recipe, torchvision_weights
from cnn_flax.models.state_dict import StateDictReader


@dataclasses.dataclass(frozen=True)
class FusedMBConvSpec(MBConvSpec):
    """A stage of Fused-MBConv blocks; the columns of :class:`MBConvSpec` (Table 4)."""


# Table 4 of the paper (torchvision's settings): (expand ratio, kernel, stride, channels,
# layers); the stem width is the first stage's input width.
_F, _M = FusedMBConvSpec, MBConvSpec
S_STAGES = (
    _F(1, 3, 1, 24, 2), _F(4, 3, 2, 48, 4), _F(4, 3, 2, 64, 4),
    _M(4, 3, 2, 128, 6), _M(6, 3, 1, 160, 9), _M(6, 3, 2, 256, 15),
)  # fmt: skip
M_STAGES = (
    _F(1, 3, 1, 24, 3), _F(4, 3, 2, 48, 5), _F(4, 3, 2, 80, 5),
    _M(4, 3, 2, 160, 7), _M(6, 3, 1, 176, 14), _M(6, 3, 2, 304, 18), _M(6, 3, 1, 512, 5),
)  # fmt: skip
L_STAGES = (
    _F(1, 3, 1, 32, 4), _F(4, 3, 2, 64, 7), _F(4, 3, 2, 96, 7),
    _M(4, 3, 2, 192, 10), _M(6, 3, 1, 224, 19), _M(6, 3, 2, 384, 25), _M(6, 3, 1, 640, 7),
)  # fmt: skip


class FusedMBConv(nn.Module):
    """Fused-MBConv (Sec. 3.2, Fig. 2): kxk expansion -> linear 1x1 projection, + residual.

    Without expansion (ratio 1) the block is a single kxk convolution with its activation and no
    projection, as torchvision builds it. The residual (with stochastic depth) is used when the
    stride is 1 and the width is kept.

    Attributes:
      features: output channels.
      expand_features: channels after the kxk convolution; equal to the input width: no
        expansion.
      kernel_size: kernel of the fused convolution.
      strides: its stride.
      conv, norm, activation: the bound convolution, normalisation and activation.
      drop_path: stochastic depth rate of the residual branch.
    """

    features: int
    expand_features: int
    kernel_size: int
    strides: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        in_features = x.shape[-1]
        cbn = functools.partial(layers.ConvBN, conv=self.conv, norm=self.norm)
        fused = functools.partial(
            cbn, kernel_size=self.kernel_size, strides=self.strides, activation=self.activation
        )
        if self.expand_features != in_features:
            y = fused(self.expand_features, name="expand")(x)
            y = cbn(self.features, 1, name="project")(y)
        else:
            y = fused(self.features, name="conv")(x)
        if self.strides == 1 and in_features == self.features:
            y = layers.DropPath(self.drop_path, name="drop_path")(y, deterministic=not train)
            y = x + y
        return y


# torchvision's EfficientNet classifier init, U(+-1/sqrt(out)): variance scaling on fan_out with
# scale 1/3 has exactly that limit.
_head_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


class EfficientNetV2(layers.BatchNormContract):
    """EfficientNetV2: stem, Fused-MBConv then MBConv stages, 1x1 head convolution, classifier.

    Features (``num_classes=0``): the pooled output of ``head_conv``.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      stages: the stage table, e.g. :data:`S_STAGES`.
      stem_features: channels of the 3x3/2 stem.
      head_features: channels of the head convolution.
      num_classes: classifier outputs; 0 returns the features.
      se_ratio: squeeze-and-excitation width of MBConv blocks as a fraction of their input width.
      dropout: dropout in front of the classifier.
      drop_path: stochastic depth rate of the last block; block b of B uses rate * b / B.
    """

    stages: tuple[MBConvSpec, ...] = S_STAGES
    stem_features: int = 24
    head_features: int = 1280
    num_classes: int = 1000
    se_ratio: float = 0.25
    dropout: float = 0.2
    drop_path: float = 0.2
    bn_epsilon: float = layers.family_default(1e-3)
    activation: layers.Activation = layers.family_default(nn.silu)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("dropout", self.dropout)
        layers.check_rate("drop_path", self.drop_path)
        conv, norm, act = layers.bind_contract(self, train=train)
        common = {"conv": conv, "norm": norm, "activation": act}
        x = x.astype(self.dtype)
        x = layers.ConvBN(self.stem_features, 3, strides=2, name="stem", **common)(x)
        total = sum(spec.repeats for spec in self.stages)
        b = 0
        for s, spec in enumerate(self.stages, start=1):
            for j in range(spec.repeats):
                in_features = x.shape[-1]
                block = {
                    "features": spec.features,
                    "expand_features": layers.make_divisible(in_features * spec.expand_ratio, 8),
                    "kernel_size": spec.kernel_size,
                    "strides": spec.strides if j == 0 else 1,
                    "drop_path": self.drop_path * b / total,
                    "name": f"stage{s}_block{j}",
                }
                if isinstance(spec, FusedMBConvSpec):
                    x = FusedMBConv(**block, **common)(x, train=train)
                else:
                    x = InvertedResidual(
                        **block,
                        **common,
                        se_features=max(1, int(in_features * self.se_ratio)),
                        se_activation=act,
                    )(x, train=train)
                b += 1
        x = layers.ConvBN(self.head_features, 1, name="head_conv", **common)(x)
        return layers.pooled_head(
            self, x, dropout=self.dropout, train=train, kernel_init=_head_init
        )


def _fused_block(sd: StateDictReader, prefix: str) -> tuple[dict, dict]:
    """torchvision ``FusedMBConv.block`` at ``prefix``: ``0`` (and ``1`` when it expands)."""
    names = ["expand", "project"] if sd.has(f"{prefix}.1.0.weight") else ["conv"]
    params, stats = {}, {}
    for i, name in enumerate(names):
        params[name], stats[name] = sd.conv_bn(f"{prefix}.{i}.0", f"{prefix}.{i}.1")
    return params, stats


def _is_mbconv(sd: StateDictReader, prefix: str) -> bool:
    # Only MBConv blocks have squeeze-and-excitation (after the depthwise convolution).
    return sd.has(f"{prefix}.1.fc1.weight") or sd.has(f"{prefix}.2.fc1.weight")


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision EfficientNetV2 state dict -> cnn_flax variables.

    ``features.0`` is the stem, ``features.1`` ... the stages (blocks ``features.{s}.{j}.block``),
    the entry after them the head convolution, ``classifier.1`` the classifier. Which blocks are
    fused is read from the state dict (MBConv blocks have SE); the shape check then confirms it.
    """
    del name
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("features.0.0", "features.0.1")
    s = 1
    while sd.has(f"features.{s}.0.block.0.0.weight"):
        j = 0
        while sd.has(f"features.{s}.{j}.block.0.0.weight"):
            prefix = f"features.{s}.{j}.block"
            block = torchvision_sequential_block if _is_mbconv(sd, prefix) else _fused_block
            params[f"stage{s}_block{j}"], stats[f"stage{s}_block{j}"] = block(sd, prefix)
            j += 1
        s += 1
    params["head_conv"], stats["head_conv"] = sd.conv_bn(f"features.{s}.0", f"features.{s}.1")
    params["head"] = sd.dense("classifier.1")
    return {"params": params, "batch_stats": stats}


# torchvision references/classification README, "EfficientNet-V2": its new recipe (the
# ``torchvision_v2`` base: SGD lr 0.5 at batch 1024, cosine after 5 warm-up epochs, 600 epochs,
# weight decay 2e-5 and none on norm layers, label smoothing 0.1, mixup 0.2 / cutmix 1.0, EMA)
# with TrivialAugment Wide, random erasing 0.1, repeated augmentation x4 and EMA every 32 steps,
# all in the base; trained at 300 px (S) or 384 px (M), evaluated at 384 / 480 px without a
# resize margin.
def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stem`` / ``stage{i}_block{j}``: ``features.{i}``."""
    del name
    return "features.0" if module == "stem" else f"features.{module[len('stage')]}"


FAMILY = Family(
    name="efficientnet_v2",
    reference="Tan & Le 2021, EfficientNetV2: Smaller Models and Faster Training",
    mappings={"torchvision": from_torchvision},
    recipe=Recipe(
        base="torchvision_v2",
        source="torchvision references/classification (EfficientNet-V2): SGD lr 0.5 at batch "
        "1024, cosine, 5 warm-up epochs, 600 epochs, wd 2e-5, label smoothing 0.1, "
        "mixup/cutmix, TrivialAugment, random erasing 0.1, repeated augmentation x4, EMA",
        target_source="torchvision IMAGENET1K_V1",
    ),
    features=FeatureNodes(("stem", "stage*"), torchvision=_torchvision_node),
)


def _sizes(train: int, evaluate: int) -> dict:
    return {
        "data.image_size": train,
        "data.eval_crop_size": evaluate,
        "data.eval_resize_size": evaluate,
    }


# name: (stages, stem width, dropout, eval interpolation, eval size, (train, eval) of the recipe).
_VARIANTS = {
    "efficientnet_v2_s": (S_STAGES, 24, 0.2, "bilinear", 384, (300, 384)),
    "efficientnet_v2_m": (M_STAGES, 24, 0.3, "bilinear", 480, (384, 480)),
    "efficientnet_v2_l": (L_STAGES, 32, 0.4, "bicubic", 480, (384, 480)),
}  # fmt: skip
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "efficientnet_v2_s": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_v2_s-dd5fe13b.pth", 384, 384,
                            "bilinear", 84.228, 96.878, 8.366, 21_458_488, 82.704),
    ),
    "efficientnet_v2_m": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_v2_m-dc08266a.pth", 480, 480,
                            "bilinear", 85.112, 97.156, 24.582, 54_139_356, 208.01),
    ),
    "efficientnet_v2_l": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_v2_l-59c71312.pth", 480, 480, "bicubic",
                            85.808, 97.788, 56.08, 118_515_272, 454.573, mean=(0.5, 0.5, 0.5),
                            std=(0.5, 0.5, 0.5)),
    ),
}
# fmt: on


for _name, _v in _VARIANTS.items():
    _stages, _stem, _dropout, _interp, _res, _recipe_sizes = _v
    _recipe = FAMILY.recipe.but(_sizes(*_recipe_sizes))
    if _name != "efficientnet_v2_l":
        _recipe = _recipe.but(target_top1=_PUBLISHED[_name][0].top1)
    else:
        # torchvision ported L's weights from the paper's TensorFlow release instead of training
        # it: its recipe here is the S/M command at M's sizes, which nobody published a result
        # for (the release's 85.7 came from the paper's progressive learning with RMSProp).
        _recipe = _recipe.but(
            source=f"{_recipe.source}; L was not trained by torchvision: its S/M command at "
            "M's sizes (384 train / 480 eval)",
            target_source="none: torchvision's L weights are the paper's TensorFlow release, "
            "not trained with this command",
        )
    FAMILY.register(
        _name,
        functools.partial(EfficientNetV2, stages=_stages, stem_features=_stem, dropout=_dropout),
        resolution=_res,
        torchvision=_name,
        weights=_PUBLISHED[_name],
        recipe=_recipe,
    )
