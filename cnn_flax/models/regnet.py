"""RegNet (Radosavovic, Kosaraju, Girshick, He and Dollar 2020, "Designing Network Design
Spaces").

The paper does not design one network but a population: its RegNet design space describes a
network by six numbers, and every RegNetX/Y model is a point in it. The depth ``d``, the initial
width ``w_0``, the slope ``w_a`` and the multiplier ``w_m`` define block widths
``u_j = w_0 + w_a * j`` for blocks ``j < d`` (Eq. 2), quantised in log space to
``w_0 * w_m ** round(log(u_j / w_0) / log(w_m))`` and rounded to a multiple of 8 (Eq. 3-4);
consecutive blocks of equal width form a stage. The group width ``g`` and the bottleneck ratio
``b`` complete the X block (a ResNeXt bottleneck); RegNetY adds squeeze-and-excitation of a
quarter of the block's input width (Sec. 5). :func:`design_stages` is that derivation, computed
as torchvision's ``BlockParams.from_init_params`` computes it (in float32, with its rounding and
its fitting of widths to whole groups), so the design-space fields of :class:`RegNet` give
torchvision's ``regnet_x_400mf`` ... ``regnet_y_128gf`` exactly, and other values sample the
design space as the paper does.

Every stage halves the resolution in its first block (a 3x3/2 stem first); each block is
1x1 -> grouped 3x3 (stride here) -> [SE] -> 1x1, added to the input (or to a 1x1/stride
projection of it when the shape changes) and then ReLU-ed. BatchNorm as torchvision's
(epsilon 1e-5, torch momentum 0.1).

Parameter names mirror torchvision's modules::

    stem                 {conv, bn}              stem.0, stem.1
    stage{s}_block{j}    conv1, conv2, conv3     trunk_output.block{s}.block{s}-{j}.f.a, .b, .c
                         se {fc1, fc2}           ... .f.se                       (RegNetY)
                         shortcut {conv, bn}     ... .proj                       (shape changes)
    head                 {kernel, bias}          fc
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import flax.linen as nn
import jax
import numpy as np

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import Family, Recipe, torchvision_weights
from cnn_flax.models.state_dict import StateDictReader

# Block widths are multiples of this (the paper's q = 8, Sec. 4).
WIDTH_QUANTUM = 8


@dataclasses.dataclass(frozen=True)
class RegNetStage:
    """One stage: ``depth`` blocks of ``width`` output channels, the first with stride 2.

    Attributes:
      width: output channels of every block.
      depth: blocks in the stage.
      group_width: channels per group of the 3x3 convolution.
      bottleneck_ratio: inner (3x3) width as a fraction of ``width``.
    """

    width: int
    depth: int
    group_width: int
    bottleneck_ratio: float

    @property
    def bottleneck_width(self) -> int:
        """Channels of the 3x3 convolution (torchvision's ``w_b``)."""
        return int(round(self.width * self.bottleneck_ratio))

    @property
    def groups(self) -> int:
        """Groups of the 3x3 convolution."""
        return self.bottleneck_width // self.group_width


def design_stages(
    *,
    depth: int,
    w_0: int,
    w_a: float,
    w_m: float,
    group_width: int,
    bottleneck_ratio: float = 1.0,
) -> tuple[RegNetStage, ...]:
    """The stages of the RegNet at one point of the design space (Radosavovic et al. 2020, Eq.
    2-4), exactly as torchvision's ``BlockParams.from_init_params`` derives them.

    The per-block arithmetic runs in float32 like torchvision's (which uses float32 tensors), so
    the rounding of ``log(u_j / w_0) / log(w_m)`` and of ``w / 8`` falls the same way (half to
    even). Afterwards each stage's bottleneck width is rounded to a whole number of groups
    (``make_divisible``), with the group width capped at the bottleneck width, and the stage width
    follows from it.

    Raises:
      ValueError: if the parameters are outside the design space.
    """
    if w_a < 0 or w_0 <= 0 or w_m <= 1 or w_0 % WIDTH_QUANTUM or depth < 1:
        raise ValueError(
            f"RegNet design (depth={depth}, w_0={w_0}, w_a={w_a}, w_m={w_m}) is outside the design "
            f"space; it needs depth >= 1, w_a >= 0, w_m > 1 and w_0 a positive multiple of "
            f"{WIDTH_QUANTUM}."
        )
    f32 = np.float32
    u = np.arange(depth).astype(f32) * f32(w_a) + f32(w_0)
    exponent = np.round(np.log(u / f32(w_0)) / f32(math.log(w_m)))
    quantised = np.round(f32(w_0) * np.power(f32(w_m), exponent) / f32(WIDTH_QUANTUM))
    block_widths = (quantised * WIDTH_QUANTUM).astype(np.int64).tolist()
    stages = []
    for width, run in itertools.groupby(block_widths):
        bottleneck = int(width * bottleneck_ratio)
        group = min(group_width, bottleneck)
        bottleneck = layers.make_divisible(bottleneck, group)
        stages.append(
            RegNetStage(
                width=int(bottleneck / bottleneck_ratio),
                depth=len(list(run)),
                group_width=group,
                bottleneck_ratio=bottleneck_ratio,
            )
        )
    return tuple(stages)


# torchvision initialises the classifier with N(0, 0.01) and zero bias.
_head_init = nn.initializers.normal(0.01)


class RegNetBlock(nn.Module):
    """The X block (a ResNeXt bottleneck, Sec. 4 and Fig. 4) or, with SE, the Y block.

    Attributes:
      stage: the stage this block belongs to (width, group width, bottleneck ratio).
      strides: stride of the 3x3 convolution and of the projection.
      se_features: squeeze-and-excitation channels, or ``None`` for an X block.
      conv, norm, activation: the bound convolution, normalisation and activation.
    """

    stage: RegNetStage
    strides: int
    se_features: int | None
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cbn = functools.partial(layers.ConvBN, conv=self.conv, norm=self.norm)
        inner = self.stage.bottleneck_width
        y = cbn(inner, 1, activation=self.activation, name="conv1")(x)
        y = cbn(
            inner,
            3,
            strides=self.strides,
            groups=self.stage.groups,
            activation=self.activation,
            name="conv2",
        )(y)
        if self.se_features is not None:
            y = layers.SqueezeExcite(
                self.se_features, activation=self.activation, dtype=y.dtype, name="se"
            )(y)
        y = cbn(self.stage.width, 1, name="conv3")(y)
        if self.strides != 1 or x.shape[-1] != self.stage.width:
            x = cbn(self.stage.width, 1, strides=self.strides, name="shortcut")(x)
        return self.activation(x + y)


class RegNet(layers.BatchNormContract):
    """A RegNet given by its design-space parameters: stem, the derived stages, pooled classifier.

    Features (``num_classes=0``): the globally pooled output of the last stage.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      depth: blocks in total (``d``).
      w_0: width of the first block (a multiple of 8).
      w_a: width slope per block.
      w_m: width multiplier between stages (> 1).
      group_width: channels per group of the 3x3 convolutions (``g``).
      bottleneck_ratio: inner width over block width (``b``; 1 for every torchvision model).
      se_ratio: squeeze-and-excitation width over the block's input width; 0 for RegNetX,
        0.25 for RegNetY.
      num_classes: classifier outputs; 0 returns the features.
      stem_features: channels of the 3x3/2 stem.
    """

    depth: int
    w_0: int
    w_a: float
    w_m: float
    group_width: int
    bottleneck_ratio: float = 1.0
    se_ratio: float = 0.0
    num_classes: int = 1000
    stem_features: int = 32

    @property
    def stages(self) -> tuple[RegNetStage, ...]:
        """The stages :func:`design_stages` derives from the design-space fields."""
        return design_stages(
            depth=self.depth,
            w_0=self.w_0,
            w_a=self.w_a,
            w_m=self.w_m,
            group_width=self.group_width,
            bottleneck_ratio=self.bottleneck_ratio,
        )

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if not 0.0 <= self.se_ratio < 1.0:
            raise ValueError(f"se_ratio={self.se_ratio} must be in [0, 1) (0: no SE).")
        conv, norm, _ = layers.bind_contract(self, train=train)
        x = x.astype(self.dtype)
        x = layers.ConvBN(
            self.stem_features,
            3,
            conv=conv,
            norm=norm,
            strides=2,
            activation=self.activation,
            name="stem",
        )(x)
        for s, stage in enumerate(self.stages, start=1):
            for j in range(stage.depth):
                # The SE width is relative to the block's input, as in torchvision.
                se = int(round(self.se_ratio * x.shape[-1])) if self.se_ratio else None
                x = RegNetBlock(
                    stage,
                    strides=2 if j == 0 else 1,
                    se_features=se,
                    conv=conv,
                    norm=norm,
                    activation=self.activation,
                    name=f"stage{s}_block{j}",
                )(x)
        return layers.pooled_head(self, x, kernel_init=_head_init)


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision RegNet state dict -> cnn_flax variables.

    Stage ``s`` is ``trunk_output.block{s}``, its block ``j`` is ``block{s}-{j}`` holding the
    transform ``f`` (``a``, ``b``, optional ``se``, ``c``; each a Conv2dNormActivation) and an
    optional projection ``proj``. The structure is read from the state dict; the shape check then
    confirms the variant.
    """
    del name
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("stem.0", "stem.1")
    for s in itertools.count(1):
        if not sd.has(f"trunk_output.block{s}.block{s}-0.f.a.0.weight"):
            break
        for j in itertools.count(0):
            prefix = f"trunk_output.block{s}.block{s}-{j}"
            if not sd.has(f"{prefix}.f.a.0.weight"):
                break
            p, b = {}, {}
            for ours, theirs in (("conv1", "a"), ("conv2", "b"), ("conv3", "c")):
                p[ours], b[ours] = sd.conv_bn(f"{prefix}.f.{theirs}.0", f"{prefix}.f.{theirs}.1")
            if sd.has(f"{prefix}.f.se.fc1.weight"):
                p["se"] = {
                    "fc1": sd.conv(f"{prefix}.f.se.fc1", bias=True),
                    "fc2": sd.conv(f"{prefix}.f.se.fc2", bias=True),
                }
            if sd.has(f"{prefix}.proj.0.weight"):
                p["shortcut"], b["shortcut"] = sd.conv_bn(f"{prefix}.proj.0", f"{prefix}.proj.1")
            params[f"stage{s}_block{j}"], stats[f"stage{s}_block{j}"] = p, b
    params["head"] = sd.dense("fc")
    return {"params": params, "batch_stats": stats}


# torchvision references/classification README, "RegNet": SGD momentum 0.9, 100 epochs, weight
# decay 5e-5 on every parameter, cosine after 5 linear warm-up epochs from 0.1 x the peak, no
# label smoothing or mixing, 224 train crop, 256/224 evaluation. Three model groups differ only in
# the batch (128, 64, 32 per GPU on 8 GPUs) and the learning rate (0.8, 0.4, 0.2): the same 0.2
# per 256 images, which is the base rate here.
_TV_RECIPE = Recipe(
    base="torchvision_step",
    overrides={
        "num_epochs": 100.0,
        "optimizer.lr": 0.2,
        "optimizer.weight_decay": 5e-5,
        "schedule.name": "cosine",
        "schedule.warmup_epochs": 5.0,
        "schedule.warmup_init_factor": 0.1,
    },
    source="torchvision references/classification (RegNet): SGD momentum 0.9, lr 0.2 per 256 "
    "images, wd 5e-5, cosine after 5 warm-up epochs from 0.1x, 100 epochs",
    target_source="torchvision IMAGENET1K_V1",
)


def _group(group: str, batch: int, every: int) -> Recipe:
    # ``every``: evaluate and checkpoint about every 2 epochs at this batch.
    return _TV_RECIPE.but(
        {"batch_size": batch, "eval_every_steps": every, "checkpoint_every_steps": every},
        source=f"{_TV_RECIPE.source}; {group} models: batch {batch}",
    )


_SMALL = _group("small", 1024, 2500)
_MEDIUM = _group("medium", 512, 5000)
_LARGE = _group("large", 256, 10_000)
# torchvision trained regnet_y_400mf at lr 0.4 at batch 1024 (0.1 per 256), half its group's rate,
# "to get the same Acc@1 as the paper".
_Y_400MF = _SMALL.but(
    {"optimizer.lr": 0.1}, source=f"{_SMALL.source}, lr 0.1 per 256 images for regnet_y_400mf"
)


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stem`` / ``stage{s}_block{j}`` (``trunk_output.block{s}``)."""
    del name
    return "stem" if module == "stem" else f"trunk_output.block{module[len('stage')]}"


FAMILY = Family(
    name="regnet",
    reference="Radosavovic et al. 2020, Designing Network Design Spaces",
    mappings={"torchvision": from_torchvision},
    recipe=_SMALL,
    features=FeatureNodes(("stem", "stage*"), torchvision=_torchvision_node),
)


# name: (depth, w_0, w_a, w_m, group width, recipe): torchvision's constructors.
# fmt: off
_X = {
    "regnet_x_400mf": (22, 24, 24.48, 2.54, 16, _SMALL),
    "regnet_x_800mf": (16, 56, 35.73, 2.28, 16, _SMALL),
    "regnet_x_1_6gf": (18, 80, 34.01, 2.25, 24, _SMALL),
    "regnet_x_3_2gf": (25, 88, 26.31, 2.25, 48, _MEDIUM),
    "regnet_x_8gf": (23, 80, 49.56, 2.88, 120, _MEDIUM),
    "regnet_x_16gf": (22, 216, 55.59, 2.1, 128, _MEDIUM),
    "regnet_x_32gf": (23, 320, 69.86, 2.0, 168, _LARGE),
}
_Y = {
    "regnet_y_400mf": (16, 48, 27.89, 2.09, 8, _Y_400MF),
    "regnet_y_800mf": (14, 56, 38.84, 2.4, 16, _SMALL),
    "regnet_y_1_6gf": (27, 48, 20.71, 2.65, 24, _SMALL),
    "regnet_y_3_2gf": (21, 80, 42.63, 2.66, 24, _MEDIUM),
    "regnet_y_8gf": (17, 192, 76.82, 2.19, 56, _MEDIUM),
    "regnet_y_16gf": (18, 200, 106.23, 2.48, 112, _LARGE),
    "regnet_y_32gf": (20, 232, 115.89, 2.53, 232, _LARGE),
}
# fmt: on


# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# SWAG (Singh et al. 2022, "Revisiting Weakly Supervised Pre-Training of Visual Perception
# Models"): pre-trained on 3.6B Instagram images, then fine-tuned end to end at 384 px or given
# a linear classifier on the frozen trunk at 224 px. V2: torchvision's new recipe with
# FixRes-style evaluation (pytorch/vision#3995).
# fmt: off
_PUBLISHED = {
    "regnet_x_400mf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_x_400mf-62229a5f.pth", 224, 232, "bilinear",
                            74.864, 92.322, 0.414, 5_495_976, 21.257),
        torchvision_weights("IMAGENET1K_V1", "regnet_x_400mf-adf1edd5.pth", 224, 256, "bilinear",
                            72.834, 90.95, 0.414, 5_495_976, 21.258),
    ),
    "regnet_x_800mf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_x_800mf-94a99ebd.pth", 224, 232, "bilinear",
                            77.522, 93.826, 0.8, 7_259_656, 27.945),
        torchvision_weights("IMAGENET1K_V1", "regnet_x_800mf-ad17e45c.pth", 224, 256, "bilinear",
                            75.212, 92.348, 0.8, 7_259_656, 27.945),
    ),
    "regnet_x_1_6gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_x_1_6gf-a12f2b72.pth", 224, 232, "bilinear",
                            79.668, 94.922, 1.603, 9_190_136, 35.339),
        torchvision_weights("IMAGENET1K_V1", "regnet_x_1_6gf-e3633e7f.pth", 224, 256, "bilinear",
                            77.04, 93.44, 1.603, 9_190_136, 35.339),
    ),
    "regnet_x_3_2gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_x_3_2gf-7071aa85.pth", 224, 232, "bilinear",
                            81.196, 95.43, 3.177, 15_296_552, 58.756),
        torchvision_weights("IMAGENET1K_V1", "regnet_x_3_2gf-f342aeae.pth", 224, 256, "bilinear",
                            78.364, 93.992, 3.177, 15_296_552, 58.756),
    ),
    "regnet_x_8gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_x_8gf-2b70d774.pth", 224, 232, "bilinear",
                            81.682, 95.678, 7.995, 39_572_648, 151.456),
        torchvision_weights("IMAGENET1K_V1", "regnet_x_8gf-03ceed89.pth", 224, 256, "bilinear",
                            79.344, 94.686, 7.995, 39_572_648, 151.456),
    ),
    "regnet_x_16gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_x_16gf-ba3796d7.pth", 224, 232, "bilinear",
                            82.716, 96.196, 15.941, 54_278_536, 207.627),
        torchvision_weights("IMAGENET1K_V1", "regnet_x_16gf-2007eb11.pth", 224, 256, "bilinear",
                            80.058, 94.944, 15.941, 54_278_536, 207.627),
    ),
    "regnet_x_32gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_x_32gf-6eb8fdc6.pth", 224, 232, "bilinear",
                            83.014, 96.288, 31.736, 107_811_560, 412.039),
        torchvision_weights("IMAGENET1K_V1", "regnet_x_32gf-9d47f8d0.pth", 224, 256, "bilinear",
                            80.622, 95.248, 31.736, 107_811_560, 412.039),
    ),
    "regnet_y_400mf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_y_400mf-e6988f5f.pth", 224, 232, "bilinear",
                            75.804, 92.742, 0.402, 4_344_144, 16.806),
        torchvision_weights("IMAGENET1K_V1", "regnet_y_400mf-c65dace8.pth", 224, 256, "bilinear",
                            74.046, 91.716, 0.402, 4_344_144, 16.806),
    ),
    "regnet_y_800mf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_y_800mf-58fc7688.pth", 224, 232, "bilinear",
                            78.828, 94.502, 0.834, 6_432_512, 24.774),
        torchvision_weights("IMAGENET1K_V1", "regnet_y_800mf-1b27b58c.pth", 224, 256, "bilinear",
                            76.42, 93.136, 0.834, 6_432_512, 24.774),
    ),
    "regnet_y_1_6gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_y_1_6gf-0d7bc02a.pth", 224, 232, "bilinear",
                            80.876, 95.444, 1.612, 11_202_430, 43.152),
        torchvision_weights("IMAGENET1K_V1", "regnet_y_1_6gf-b11a554e.pth", 224, 256, "bilinear",
                            77.95, 93.966, 1.612, 11_202_430, 43.152),
    ),
    "regnet_y_3_2gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_y_3_2gf-9180c971.pth", 224, 232, "bilinear",
                            81.982, 95.972, 3.176, 19_436_338, 74.567),
        torchvision_weights("IMAGENET1K_V1", "regnet_y_3_2gf-b5a9779c.pth", 224, 256, "bilinear",
                            78.948, 94.576, 3.176, 19_436_338, 74.567),
    ),
    "regnet_y_8gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_y_8gf-dc2b1b54.pth", 224, 232, "bilinear",
                            82.828, 96.33, 8.473, 39_381_472, 150.701),
        torchvision_weights("IMAGENET1K_V1", "regnet_y_8gf-d0d0e4a8.pth", 224, 256, "bilinear",
                            80.032, 95.048, 8.473, 39_381_472, 150.701),
    ),
    "regnet_y_16gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_y_16gf-3e4a00f9.pth", 224, 232, "bilinear",
                            82.886, 96.328, 15.912, 83_590_140, 319.49),
        torchvision_weights("IMAGENET1K_V1", "regnet_y_16gf-9e6ed7dd.pth", 224, 256, "bilinear",
                            80.424, 95.24, 15.912, 83_590_140, 319.49),
        torchvision_weights("IMAGENET1K_SWAG_E2E_V1", "regnet_y_16gf_swag-43afe44d.pth", 384, 384,
                            "bicubic", 86.012, 98.054, 46.735, 83_590_140, 319.49),
        torchvision_weights("IMAGENET1K_SWAG_LINEAR_V1", "regnet_y_16gf_lc_swag-f3ec0043.pth", 224,
                            224, "bicubic", 83.976, 97.244, 15.912, 83_590_140, 319.49),
    ),
    "regnet_y_32gf": (
        torchvision_weights("IMAGENET1K_V2", "regnet_y_32gf-8db6d4b5.pth", 224, 232, "bilinear",
                            83.368, 96.498, 32.28, 145_046_770, 554.076),
        torchvision_weights("IMAGENET1K_V1", "regnet_y_32gf-4dee3f7a.pth", 224, 256, "bilinear",
                            80.878, 95.34, 32.28, 145_046_770, 554.076),
        torchvision_weights("IMAGENET1K_SWAG_E2E_V1", "regnet_y_32gf_swag-04fdfa75.pth", 384, 384,
                            "bicubic", 86.838, 98.362, 94.826, 145_046_770, 554.076),
        torchvision_weights("IMAGENET1K_SWAG_LINEAR_V1", "regnet_y_32gf_lc_swag-e1583746.pth", 224,
                            224, "bicubic", 84.622, 97.48, 32.28, 145_046_770, 554.076),
    ),
    "regnet_y_128gf": (
        torchvision_weights("IMAGENET1K_SWAG_E2E_V1", "regnet_y_128gf_swag-c8ce3e52.pth", 384, 384,
                            "bicubic", 88.228, 98.682, 374.57, 644_812_894, 2461.564),
        torchvision_weights("IMAGENET1K_SWAG_LINEAR_V1", "regnet_y_128gf_lc_swag-cbe8ce12.pth",
                            224, 224, "bicubic", 86.068, 97.844, 127.518, 644_812_894, 2461.564),
    ),
}
# fmt: on


def _register(name: str, spec: tuple, *, se_ratio: float) -> None:
    depth, w_0, w_a, w_m, group_width, recipe = spec
    weights = _PUBLISHED[name]
    v1_top1 = next(w.top1 for w in weights if w.tag == "IMAGENET1K_V1")
    builder = functools.partial(
        RegNet, depth=depth, w_0=w_0, w_a=w_a, w_m=w_m, group_width=group_width, se_ratio=se_ratio
    )
    # The recipe reproduces the V1 weights; the V2 weights' recipe is torchvision's new one.
    recipe = recipe.but(target_top1=v1_top1)
    FAMILY.register(name, builder, torchvision=name, weights=weights, recipe=recipe)


for _name, _spec in _X.items():
    _register(_name, _spec, se_ratio=0.0)
for _name, _spec in _Y.items():
    _register(_name, _spec, se_ratio=0.25)

# regnet_y_128gf has only SWAG weights, which no ImageNet-1k recipe reproduces: it gets the
# large-model recipe without a target, and its default resolution is that of its default weights.
FAMILY.register(
    "regnet_y_128gf",
    functools.partial(
        RegNet, depth=27, w_0=456, w_a=160.83, w_m=2.52, group_width=264, se_ratio=0.25
    ),
    resolution=384,
    torchvision="regnet_y_128gf",
    weights=_PUBLISHED["regnet_y_128gf"],
    recipe=_LARGE.but(
        target_source="none: torchvision has only SWAG weights (Instagram pre-training) for it"
    ),
)
