"""The inverted residual (MBConv) block shared by MobileNet v2, MobileNet v3 and EfficientNet.

Sandler et al. 2018 ("MobileNetV2: Inverted Residuals and Linear Bottlenecks") introduced the
block: a 1x1 expansion, a depthwise convolution and a linear 1x1 projection, with a residual
connection between the narrow ends. Howard et al. 2019 (MobileNet v3) and Tan & Le 2019
(EfficientNet) add squeeze-and-excitation between the depthwise and projection convolutions, and
EfficientNet adds stochastic depth on the residual branch. The families differ only in how they
compute the channel counts, so they compute them and hand this block plain integers.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from cnn_flax.models import layers
from cnn_flax.models.state_dict import StateDictReader


@dataclasses.dataclass(frozen=True)
class MBConvSpec:
    """One stage of identical inverted residual blocks, before width/depth scaling.

    The columns of MobileNet v2's Table 2 (t, c, n, s) and of EfficientNet-B0's Table 1, plus the
    kernel size that EfficientNet varies per stage.

    Attributes:
      expand_ratio: expansion factor t of the first 1x1 convolution.
      kernel_size: depthwise kernel size.
      strides: stride of the stage's first block (later blocks use 1).
      features: output channels c, before width scaling.
      repeats: number of blocks n, before depth scaling.
    """

    expand_ratio: float
    kernel_size: int
    strides: int
    features: int
    repeats: int


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (kxk) -> optional squeeze-excite -> linear project (1x1).

    The residual connection is used when the stride is 1 and the input and output widths agree,
    as in all three papers; stochastic depth (EfficientNet) drops only that residual branch.

    Attributes:
      features: output channels.
      expand_features: channels after the expansion; no expansion convolution when it equals the
        input width (torchvision's rule, so t = 1 blocks have no ``expand`` parameters).
      kernel_size: depthwise kernel size.
      strides: depthwise stride.
      conv: bound convolution.
      norm: bound normalisation.
      activation: activation after the expansion and depthwise convolutions.
      se_features: squeeze-and-excitation bottleneck channels, or ``None`` for no SE.
      se_activation: activation inside the SE bottleneck.
      se_gate: SE gating function.
      drop_path: stochastic depth rate of the residual branch (0 disables it).
    """

    features: int
    expand_features: int
    kernel_size: int
    strides: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation
    se_features: int | None = None
    se_activation: layers.Activation = nn.relu
    se_gate: layers.Activation = nn.sigmoid
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.strides not in (1, 2):
            raise ValueError(f"InvertedResidual strides must be 1 or 2, got {self.strides}.")
        in_features = x.shape[-1]
        y = x
        if self.expand_features != in_features:
            y = layers.ConvBN(
                self.expand_features,
                1,
                conv=self.conv,
                norm=self.norm,
                activation=self.activation,
                name="expand",
            )(y)
        y = layers.ConvBN(
            self.expand_features,
            self.kernel_size,
            conv=self.conv,
            norm=self.norm,
            strides=self.strides,
            groups=self.expand_features,
            activation=self.activation,
            name="depthwise",
        )(y)
        if self.se_features is not None:
            y = layers.SqueezeExcite(
                self.se_features,
                activation=self.se_activation,
                gate=self.se_gate,
                dtype=y.dtype,
                name="se",
            )(y)
        # Linear bottleneck: no activation after the projection (Sandler et al. 2018, Sec. 3.2).
        y = layers.ConvBN(self.features, 1, conv=self.conv, norm=self.norm, name="project")(y)
        if self.strides == 1 and in_features == self.features:
            y = layers.DropPath(self.drop_path, name="drop_path")(y, deterministic=not train)
            y = x + y
        return y


def torchvision_v2_block(sd: StateDictReader, prefix: str) -> tuple[dict, dict]:
    """torchvision ``mobilenetv2.InvertedResidual`` at ``prefix`` (its ``conv`` Sequential).

    The Sequential holds ``[expand], depthwise`` (each Conv2dNormActivation) and then the
    projection as a bare Conv2d and BatchNorm2d: four children with expansion, three without.
    """
    names = ["expand", "depthwise"] if sd.has(f"{prefix}.3.weight") else ["depthwise"]
    params, stats = {}, {}
    for i, name in enumerate(names):
        params[name], stats[name] = sd.conv_bn(f"{prefix}.{i}.0", f"{prefix}.{i}.1")
    n = len(names)
    params["project"], stats["project"] = sd.conv_bn(f"{prefix}.{n}", f"{prefix}.{n + 1}")
    return params, stats


def torchvision_sequential_block(sd: StateDictReader, prefix: str) -> tuple[dict, dict]:
    """torchvision MobileNet v3 / EfficientNet ``block`` Sequential at ``prefix``.

    Children: ``[expand], depthwise, [se], project``; convolutions are Conv2dNormActivation
    (``.0`` conv, ``.1`` BN), squeeze-and-excitation has ``fc1``/``fc2`` with biases. Whether a
    block has an expansion or SE is read from the state dict, so no widths are needed.
    """
    params, stats = {}, {}
    convs = []
    i = 0
    while sd.has(f"{prefix}.{i}.0.weight") or sd.has(f"{prefix}.{i}.fc1.weight"):
        if sd.has(f"{prefix}.{i}.fc1.weight"):
            params["se"] = {
                "fc1": sd.conv(f"{prefix}.{i}.fc1", bias=True),
                "fc2": sd.conv(f"{prefix}.{i}.fc2", bias=True),
            }
        else:
            convs.append(i)
        i += 1
    if len(convs) not in (2, 3):
        raise ValueError(
            f"{prefix}: expected 2 or 3 convolutions in an inverted residual block, found "
            f"{len(convs)}; the state dict is not a torchvision MobileNet v3 / EfficientNet."
        )
    names = ["expand", "depthwise", "project"][-len(convs) :]
    for name, j in zip(names, convs, strict=True):
        params[name], stats[name] = sd.conv_bn(f"{prefix}.{j}.0", f"{prefix}.{j}.1")
    return params, stats


def timm_block(sd: StateDictReader, prefix: str) -> tuple[dict, dict]:
    """A timm ``DepthwiseSeparableConv`` or ``InvertedResidual`` at ``prefix`` (``blocks.s.j``).

    timm names a block with an expansion ``conv_pw``/``bn1`` (expand), ``conv_dw``/``bn2``
    (depthwise), ``se.conv_reduce``/``se.conv_expand`` and ``conv_pwl``/``bn3`` (project); one
    without an expansion (its first stage) ``conv_dw``/``bn1`` and ``conv_pw``/``bn2`` (project).
    Which one it is reads off the state dict (a ``conv_pwl`` is there or not).
    """
    params, stats = {}, {}
    if sd.has(f"{prefix}.conv_pwl.weight"):
        convs = (("expand", "conv_pw", "bn1"), ("depthwise", "conv_dw", "bn2"))
        convs += (("project", "conv_pwl", "bn3"),)
    else:
        convs = (("depthwise", "conv_dw", "bn1"), ("project", "conv_pw", "bn2"))
    for name, conv, bn in convs:
        params[name], stats[name] = sd.conv_bn(f"{prefix}.{conv}", f"{prefix}.{bn}")
    if sd.has(f"{prefix}.se.conv_reduce.weight"):
        params["se"] = {
            "fc1": sd.conv(f"{prefix}.se.conv_reduce", bias=True),
            "fc2": sd.conv(f"{prefix}.se.conv_expand", bias=True),
        }
    return params, stats


def timm_stages(sd: StateDictReader) -> list[list[tuple[dict, dict]]]:
    """The inverted residual blocks of a timm EfficientNet / MobileNet v2 / v3 state dict, by stage.

    timm's ``blocks.{s}.{j}`` are stage ``s`` and block ``j`` from 0; the stages end where a block
    has no depthwise convolution (MobileNet v3's final 1x1 ``ConvBnAct``) or none is left.
    """
    stages = []
    s = 0
    while sd.has(f"blocks.{s}.0.conv_dw.weight"):
        j, blocks = 0, []
        while sd.has(f"blocks.{s}.{j}.conv_dw.weight"):
            blocks.append(timm_block(sd, f"blocks.{s}.{j}"))
            j += 1
        stages.append(blocks)
        s += 1
    return stages
