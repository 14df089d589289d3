"""MNASNet (Tan, Chen, Pang, Vasudevan, Sandler, Howard and Le 2019, "MnasNet: Platform-Aware
Neural Architecture Search for Mobile").

A network found by reinforcement-learning search over a factorised hierarchical space (Sec. 4)
with real phone latency in the reward (Sec. 3). This is torchvision's ``mnasnet0_5`` ...
``mnasnet1_3``, number for number: the paper's MnasNet-B1 (no squeeze-and-excitation), built of

- a 3x3/2 stem convolution and a depthwise-separable block (3x3 depthwise, linear 1x1) without a
  residual;
- six stacks of inverted residual blocks (Sandler et al. 2018): 1x1 expansion by 3 or 6, a 3x3
  or 5x5 depthwise convolution, a linear 1x1 projection, ReLU after the first two and a residual
  connection when stride and width allow (every block but each stack's first);
- a 1x1 convolution to 1280 channels, global pooling, dropout 0.2 and a linear classifier.

The depth multiplier (``width_mult``, torchvision's ``alpha``) scales the eight widths of
:data:`DEPTHS` (stem, separable block and the six stacks; the 1280-wide last convolution stays)
with torchvision's ``_round_to_multiple_of`` (bias 0.9), which is the MobileNet rule
:func:`cnn_flax.models.layers.make_divisible`. BatchNorm uses torchvision's momentum of
1 - 0.9997 (Flax ``bn_momentum=0.9997``); the paper trains with 0.99 (its recipe sets that).

Parameter names: ``stem``, ``separable`` (``depthwise``, ``project``), ``stack{s}_block{j}``
(``expand``, ``depthwise``, ``project``; stacks 1 to 6), ``head_conv`` and ``head``.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.inverted_residual import InvertedResidual
from cnn_flax.models.registry import Family, Recipe, torchvision_weights
from cnn_flax.models.state_dict import StateDictReader

# Widths before the multiplier: stem, separable block, then the output of each of the six stacks.
DEPTHS = (32, 16, 24, 40, 80, 96, 192, 320)


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """One stack of inverted residual blocks (torchvision's ``_stack``).

    Attributes:
      kernel_size: depthwise kernel size.
      strides: stride of the stack's first block.
      expand_ratio: expansion of every block.
      repeats: blocks in the stack.
    """

    kernel_size: int
    strides: int
    expand_ratio: int
    repeats: int


# The six stacks of MnasNet-B1 as torchvision builds them (output widths in DEPTHS[2:]).
B1_STACKS = (
    StackSpec(3, 2, 3, 3),
    StackSpec(5, 2, 3, 3),
    StackSpec(5, 2, 6, 3),
    StackSpec(3, 1, 6, 2),
    StackSpec(5, 2, 6, 4),
    StackSpec(3, 1, 6, 1),
)


class MNASNet(layers.BatchNormContract):
    """MNASNet-B1 as torchvision builds it.

    Features (``num_classes=0``): the globally pooled output of the 1280-wide last convolution.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      num_classes: classifier outputs; 0 returns the features.
      width_mult: depth multiplier (torchvision's ``alpha``) on :data:`DEPTHS`.
      stacks: the inverted residual stacks.
      head_features: width of the last convolution (not scaled).
      dropout: dropout in front of the classifier.
      bn_momentum: Flax BatchNorm momentum (1 - torch momentum; torchvision's 0.0003).
    """

    num_classes: int = 1000
    width_mult: float = 1.0
    stacks: tuple[StackSpec, ...] = B1_STACKS
    head_features: int = 1280
    dropout: float = 0.2
    bn_momentum: float = layers.family_default(0.9997)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.width_mult <= 0.0:
            raise ValueError(f"MNASNet width_mult must be positive, got {self.width_mult}.")
        if len(self.stacks) != len(DEPTHS) - 2:
            raise ValueError(
                f"MNASNet has {len(DEPTHS) - 2} stacks (one per width of DEPTHS[2:]), "
                f"got {len(self.stacks)}."
            )
        layers.check_rate("dropout", self.dropout)
        conv, norm, act = layers.bind_contract(self, train=train)
        # torchvision's _round_to_multiple_of(d * alpha, 8) with round_up_bias 0.9 is the
        # MobileNet rounding rule (tests/models/test_mnasnet.py checks them against each other).
        depths = [layers.make_divisible(d * self.width_mult, 8) for d in DEPTHS]

        x = x.astype(self.dtype)
        x = layers.ConvBN(depths[0], 3, conv=conv, norm=norm, strides=2, activation=act,
                          name="stem")(x)  # fmt: skip
        # Depthwise-separable: an inverted residual without expansion (and, as the widths
        # differ, without residual).
        x = InvertedResidual(
            depths[1],
            expand_features=depths[0],
            kernel_size=3,
            strides=1,
            conv=conv,
            norm=norm,
            activation=act,
            name="separable",
        )(x, train=train)
        for s, (spec, features) in enumerate(zip(self.stacks, depths[2:], strict=True), start=1):
            for j in range(spec.repeats):
                x = InvertedResidual(
                    features,
                    expand_features=x.shape[-1] * spec.expand_ratio,
                    kernel_size=spec.kernel_size,
                    strides=spec.strides if j == 0 else 1,
                    conv=conv,
                    norm=norm,
                    activation=act,
                    name=f"stack{s}_block{j}",
                )(x, train=train)
        x = layers.ConvBN(self.head_features, 1, conv=conv, norm=norm, activation=act,
                          name="head_conv")(x)  # fmt: skip
        return layers.pooled_head(
            self, x, dropout=self.dropout, train=train, kernel_init=_head_init
        )


# torchvision: Kaiming-uniform on fan_out for the classifier (gain 1: "sigmoid"), zero bias.
_head_init = nn.initializers.variance_scaling(1.0, "fan_out", "uniform")


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision MNASNet state dict -> cnn_flax variables.

    ``layers`` is one Sequential: stem conv/BN at 0-1, the separable block's depthwise at 3-4
    and projection at 6-7, the six stacks at 8-13 (each block's own ``layers`` Sequential:
    expand at 0-1, depthwise at 3-4, projection at 6-7) and the last convolution at 14-15.
    """
    del name
    params, stats = {}, {}

    def block(prefix: str, parts: dict[str, int]) -> tuple[dict, dict]:
        p, s = {}, {}
        for part, i in parts.items():
            p[part], s[part] = sd.conv_bn(f"{prefix}.{i}", f"{prefix}.{i + 1}")
        return p, s

    params["stem"], stats["stem"] = sd.conv_bn("layers.0", "layers.1")
    params["separable"], stats["separable"] = block("layers", {"depthwise": 3, "project": 6})
    inverted = {"expand": 0, "depthwise": 3, "project": 6}
    s = 1
    while sd.has(f"layers.{7 + s}.0.layers.0.weight"):
        j = 0
        while sd.has(f"layers.{7 + s}.{j}.layers.0.weight"):
            key = f"stack{s}_block{j}"
            params[key], stats[key] = block(f"layers.{7 + s}.{j}.layers", inverted)
            j += 1
        s += 1
    last = 7 + s
    params["head_conv"], stats["head_conv"] = sd.conv_bn(f"layers.{last}", f"layers.{last + 1}")
    params["head"] = sd.dense("classifier.1")
    return {"params": params, "batch_stats": stats}


_PAPER = "Tan et al. 2019, MnasNet (MnasNet-B1)"
_TV_V2_RECIPE = (
    "torchvision's new recipe (pytorch/vision#6019, the IMAGENET1K_V1 weights): SGD momentum "
    "0.9, lr 0.5 at batch 1024, cosine after 5 warm-up epochs, 600 epochs, wd 2e-5 (none on "
    "norms), label smoothing 0.1, mixup 0.2 / cutmix 1.0, TrivialAugment, random erasing 0.1, "
    "repeated augmentation x4, EMA, train crop 176, eval resize 232"
)


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stem`` (``layers.2``), ``separable`` (``layers.7``) and
    ``stack{s}_block{j}`` (``layers.{7 + s}``)."""
    del name
    if module.startswith("stack"):
        return f"layers.{7 + int(module[len('stack')])}"
    return {"stem": "layers.2", "separable": "layers.7"}[module]


FAMILY = Family(
    name="mnasnet",
    reference=_PAPER + "; torchvision mnasnet",
    mappings={"torchvision": from_torchvision},
    # The paper's Sec. 4: RMSProp (decay 0.9, momentum 0.9), BatchNorm momentum 0.99, weight
    # decay 1e-5, dropout 0.2, lr warmed up to 0.256 over 5 epochs then x0.97 every 2.4 epochs,
    # batch 4096; the rest (EMA, label smoothing, 350 epochs) as its TPU reference code.
    recipe=Recipe(
        base="tf_tpu",
        overrides={"batch_size": 4096, "model_overrides.bn_momentum": 0.99},
        source="Tan et al. 2019, sec. 4 (tensorflow/tpu mnasnet): RMSProp, lr 0.256 at batch "
        "4096 after 5 warm-up epochs, x0.97 every 2.4 epochs, wd 1e-5, BN momentum 0.99",
        target_source="torchvision IMAGENET1K_V1, trained with SGD by 1e100/mnasnet_trainer "
        "(pytorch/vision#829), not with this recipe",
    ),
    features=FeatureNodes(("stem", "separable", "stack*"), torchvision=_torchvision_node),
)
_TV_V2 = Recipe(
    base="torchvision_v2",  # the command of pytorch/vision#6019 is the ResNet-50 V2 command
    source=_TV_V2_RECIPE,
    target_source="torchvision IMAGENET1K_V1, trained with this recipe",
)

# name: (width multiplier, recipe) as torchvision.
_VARIANTS = {
    "mnasnet0_5": (0.5, FAMILY.recipe),
    "mnasnet0_75": (0.75, _TV_V2),
    "mnasnet1_0": (1.0, FAMILY.recipe),
    "mnasnet1_3": (1.3, _TV_V2),
}
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "mnasnet0_5": (
        torchvision_weights("IMAGENET1K_V1", "mnasnet0.5_top1_67.823-3ffadce67e.pth", 224, 256,
                            "bilinear", 67.734, 87.49, 0.104, 2_218_512, 8.591),
    ),
    "mnasnet0_75": (
        torchvision_weights("IMAGENET1K_V1", "mnasnet0_75-7090bc5f.pth", 224, 232, "bilinear",
                            71.18, 90.496, 0.215, 3_170_208, 12.303),
    ),
    "mnasnet1_0": (
        torchvision_weights("IMAGENET1K_V1", "mnasnet1.0_top1_73.512-f206786ef8.pth", 224, 256,
                            "bilinear", 73.456, 91.51, 0.314, 4_383_312, 16.915),
    ),
    "mnasnet1_3": (
        torchvision_weights("IMAGENET1K_V1", "mnasnet1_3-a4c69d6f.pth", 224, 232, "bilinear",
                            76.506, 93.522, 0.526, 6_282_256, 24.246),
    ),
}
# fmt: on


for _name, (_mult, _recipe) in _VARIANTS.items():
    FAMILY.register(
        _name,
        functools.partial(MNASNet, width_mult=_mult),
        torchvision=_name,
        weights=_PUBLISHED[_name],
        recipe=_recipe.but(target_top1=_PUBLISHED[_name][0].top1),
    )
