"""torchvision inverted residual blocks -> cnn_flax `InvertedResidual` parameters.

Shared by the MobileNet v2, MobileNet v3 and EfficientNet mappings. Whether a block has an
expansion convolution or squeeze-and-excitation is read from the state dict itself, so the
mappings need no knowledge of widths or multipliers.
"""

from __future__ import annotations

from cnn_flax.convert.common import StateDictReader


def v2_block(sd: StateDictReader, prefix: str) -> tuple[dict, dict]:
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


def sequential_block(sd: StateDictReader, prefix: str) -> tuple[dict, dict]:
    """torchvision MobileNet v3 / EfficientNet ``block`` Sequential at ``prefix``.

    Children: ``[expand], depthwise, [se], project``; convolutions are Conv2dNormActivation
    (``.0`` conv, ``.1`` BN), squeeze-and-excitation has ``fc1``/``fc2`` with biases.
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
