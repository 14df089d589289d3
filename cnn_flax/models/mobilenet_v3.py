"""MobileNet v3 (Howard et al. 2019, "Searching for MobileNetV3"), as torchvision builds it.

The large and small networks of the paper's Tables 1 and 2: inverted residual blocks with
per-block kernel size, expansion width, squeeze-and-excitation and activation (ReLU or
hard-swish), a hard-swish stem and head, and a classifier of Linear-hardswish-Dropout-Linear
(the paper's final 1x1 convolutions after pooling, which are the same as dense layers).
Squeeze-and-excitation uses a hard-sigmoid gate and ``make_divisible(expanded / 4)`` channels.
BatchNorm uses epsilon 1e-3 and torch momentum 0.01 (Flax 0.99), as torchvision does.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.inverted_residual import (
    InvertedResidual,
    timm_stages,
    torchvision_sequential_block,
)
from cnn_flax.models.registry import (
    Family,
    Recipe,
    timm_weights,
    torchvision_weights,
)
from cnn_flax.models.state_dict import StateDictReader, dense_kernel


@dataclasses.dataclass(frozen=True)
class V3BlockSpec:
    """One row ("bneck") of the paper's Table 1 / Table 2, before width scaling.

    Attributes:
      kernel_size: depthwise kernel size.
      expand_features: "exp size", channels after the expansion.
      features: "#out", output channels.
      use_se: squeeze-and-excitation ("SE").
      use_hs: hard-swish (True, "HS") or ReLU (False, "RE").
      strides: depthwise stride ("s").
    """

    kernel_size: int
    expand_features: int
    features: int
    use_se: bool
    use_hs: bool
    strides: int


_B = V3BlockSpec
# Table 1. The input width of each row is the previous row's output (16 after the stem).
V3_LARGE: tuple[V3BlockSpec, ...] = (
    _B(3, 16, 16, False, False, 1),
    _B(3, 64, 24, False, False, 2),
    _B(3, 72, 24, False, False, 1),
    _B(5, 72, 40, True, False, 2),
    _B(5, 120, 40, True, False, 1),
    _B(5, 120, 40, True, False, 1),
    _B(3, 240, 80, False, True, 2),
    _B(3, 200, 80, False, True, 1),
    _B(3, 184, 80, False, True, 1),
    _B(3, 184, 80, False, True, 1),
    _B(3, 480, 112, True, True, 1),
    _B(3, 672, 112, True, True, 1),
    _B(5, 672, 160, True, True, 2),
    _B(5, 960, 160, True, True, 1),
    _B(5, 960, 160, True, True, 1),
)
# Table 2.
V3_SMALL: tuple[V3BlockSpec, ...] = (
    _B(3, 16, 16, True, False, 2),
    _B(3, 72, 24, False, False, 2),
    _B(3, 88, 24, False, False, 1),
    _B(5, 96, 40, True, True, 2),
    _B(5, 240, 40, True, True, 1),
    _B(5, 240, 40, True, True, 1),
    _B(5, 120, 48, True, True, 1),
    _B(5, 144, 48, True, True, 1),
    _B(5, 288, 96, True, True, 2),
    _B(5, 576, 96, True, True, 1),
    _B(5, 576, 96, True, True, 1),
)


class MobileNetV3(layers.BatchNormContract):
    """MobileNet v3, large or small depending on ``blocks`` and ``last_features``.

    Parameter names: ``stem``, ``block1`` ... ``blockN`` (torchvision's ``features.1`` ...;
    each with optional ``expand``, ``depthwise``, optional ``se`` (``fc1``, ``fc2``) and
    ``project``), ``head_conv`` (1x1 to 6x the last block's width), ``head_fc`` (the hidden
    classifier layer) and ``head``. Features (``num_classes=0``): the activated output of
    ``head_fc``, the input of the final classifier.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      num_classes: classifier outputs; 0 returns the features.
      blocks: the bneck rows before width scaling.
      stem_features: stem channels before width scaling.
      last_features: width of the hidden classifier layer before width scaling (1280 large,
        1024 small).
      width_mult: width multiplier; every width goes through ``make_divisible(c * width_mult)``.
      dropout: dropout between the two classifier layers.
      bn_momentum: Flax BatchNorm momentum (torchvision's 0.01 is 0.99 here).
      activation: the "HS" activation (hard-swish); "RE" blocks use ReLU.
      padding: convolution padding (:data:`cnn_flax.models.layers.PADDINGS`): ``"symmetric"`` as
        torchvision, ``"tf_same"`` for weights trained in TensorFlow.
    """

    num_classes: int = 1000
    blocks: tuple[V3BlockSpec, ...] = V3_LARGE
    stem_features: int = 16
    last_features: int = 1280
    width_mult: float = 1.0
    dropout: float = 0.2
    bn_momentum: float = layers.family_default(0.99)
    bn_epsilon: float = layers.family_default(1e-3)
    activation: layers.Activation = layers.family_default(layers.hard_swish)
    padding: str = "symmetric"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("dropout", self.dropout)
        conv, norm, _ = layers.bind_contract(self, train=train, padding=self.padding)

        def width(c: float) -> int:
            return layers.make_divisible(c * self.width_mult, 8)

        x = x.astype(self.dtype)
        x = layers.ConvBN(
            width(self.stem_features),
            3,
            conv=conv,
            norm=norm,
            strides=2,
            activation=self.activation,
            name="stem",
        )(x)
        for k, spec in enumerate(self.blocks, start=1):
            expanded = width(spec.expand_features)
            x = InvertedResidual(
                width(spec.features),
                expand_features=expanded,
                kernel_size=spec.kernel_size,
                strides=spec.strides,
                conv=conv,
                norm=norm,
                activation=self.activation if spec.use_hs else nn.relu,
                se_features=layers.make_divisible(expanded // 4, 8) if spec.use_se else None,
                se_activation=nn.relu,
                se_gate=layers.hard_sigmoid,
                name=f"block{k}",
            )(x, train=train)
        x = layers.ConvBN(
            6 * x.shape[-1], 1, conv=conv, norm=norm, activation=self.activation, name="head_conv"
        )(x)
        x = jnp.mean(x, axis=(1, 2))
        dense = functools.partial(
            nn.Dense,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(0.01),
        )
        x = self.activation(dense(width(self.last_features), name="head_fc")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return layers.classifier(
            x, self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01)
        )


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision MobileNet v3 (large or small) state dict -> cnn_flax variables."""
    del name  # large and small differ only in how many blocks the state dict holds
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("features.0.0", "features.0.1")
    k = 1
    while sd.has(f"features.{k}.block.0.0.weight"):
        params[f"block{k}"], stats[f"block{k}"] = torchvision_sequential_block(
            sd, f"features.{k}.block"
        )
        k += 1
    params["head_conv"], stats["head_conv"] = sd.conv_bn(f"features.{k}.0", f"features.{k}.1")
    params["head_fc"] = sd.dense("classifier.0")
    params["head"] = sd.dense("classifier.3")
    return {"params": params, "batch_stats": stats}


def from_timm(name: str, sd: StateDictReader) -> dict:
    """timm MobileNet v3 state dict (``mobilenetv3_*_100``, ``tf_mobilenetv3_*_100``).

    timm ends the blocks with a 1x1 ``ConvBnAct`` (our ``head_conv``) and, after pooling, a 1x1
    ``conv_head`` with a bias, the hidden classifier layer (our dense ``head_fc``). Its own
    weights use PyTorch's BatchNorm epsilon 1e-5 and the TF ports ("tf_") TF's padding and 1e-3,
    which :func:`cnn_flax.weights.load` reads off timm's file names.
    """
    del name
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("conv_stem", "bn1")
    stages = timm_stages(sd)
    blocks = [block for stage in stages for block in stage]
    for k, (block_params, block_stats) in enumerate(blocks, start=1):
        params[f"block{k}"], stats[f"block{k}"] = block_params, block_stats
    last = f"blocks.{len(stages)}.0"
    params["head_conv"], stats["head_conv"] = sd.conv_bn(f"{last}.conv", f"{last}.bn1")
    fc = sd("conv_head.weight")
    params["head_fc"] = {"kernel": dense_kernel(fc[:, :, 0, 0]), "bias": sd("conv_head.bias")}
    params["head"] = sd.dense("classifier")
    return {"params": params, "batch_stats": stats}


_REF = "Howard et al. 2019, Searching for MobileNetV3; torchvision"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stem`` / ``block{k}``: ``features.{k}``."""
    del name
    return "features.0" if module == "stem" else f"features.{module[len('block') :]}"


FAMILY = Family(
    name="mobilenet_v3",
    reference=_REF,
    mappings={"torchvision": from_torchvision, "timm": from_timm},
    # torchvision trained its V3 weights with AutoAugment, so v3 uses policy v0 on top of the
    # TF TPU recipe (the paper's Sec. 6.1 trains without it).
    recipe=Recipe(
        base="tf_tpu",
        overrides={"data.augment.autoaugment": "v0"},
        source="TF TPU reference recipe (tensorflow/tpu mnasnet) + AutoAugment v0",
        target_source="Howard et al. 2019, Table 3",
    ),
    features=FeatureNodes(("stem", "block*"), torchvision=_torchvision_node),
)
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "mobilenet_v3_large": (
        torchvision_weights("IMAGENET1K_V2", "mobilenet_v3_large-5c1a4163.pth", 224, 232,
                            "bilinear", 75.274, 92.566, 0.217, 5_483_032, 21.107),
        torchvision_weights("IMAGENET1K_V1", "mobilenet_v3_large-8738ca79.pth", 224, 256,
                            "bilinear", 74.042, 91.34, 0.217, 5_483_032, 21.114),
        timm_weights("mobilenetv3_large_100.miil_in21k_ft_in1k", 224, 256, "bilinear",
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        timm_weights("mobilenetv3_large_100.ra4_e3600_r224_in1k", 224, 235, "bicubic",
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        timm_weights("mobilenetv3_large_100.ra_in1k", 224, 256, "bicubic"),
        timm_weights("tf_mobilenetv3_large_100.in1k", 224, 256, "bilinear", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
    ),
    "mobilenet_v3_small": (
        torchvision_weights("IMAGENET1K_V1", "mobilenet_v3_small-047dcff4.pth", 224, 256,
                            "bilinear", 67.668, 87.402, 0.057, 2_542_856, 9.829),
        timm_weights("mobilenetv3_small_100.lamb_in1k", 224, 256, "bicubic"),
        timm_weights("tf_mobilenetv3_small_100.in1k", 224, 256, "bilinear", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
    ),
}
# fmt: on


FAMILY.register(
    "mobilenet_v3_large",
    MobileNetV3,
    reference=_REF + " mobilenet_v3_large",
    torchvision="mobilenet_v3_large",
    weights=_PUBLISHED["mobilenet_v3_large"],
    recipe=FAMILY.recipe.but(target_top1=75.2),
)
FAMILY.register(
    "mobilenet_v3_small",
    functools.partial(MobileNetV3, blocks=V3_SMALL, last_features=1024),
    reference=_REF + " mobilenet_v3_small",
    torchvision="mobilenet_v3_small",
    weights=_PUBLISHED["mobilenet_v3_small"],
    recipe=FAMILY.recipe.but(target_top1=67.4),
)
