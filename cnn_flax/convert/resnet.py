"""torchvision ResNet / ResNeXt / Wide ResNet -> cnn_flax ResNet.

The names map one to one (see :mod:`cnn_flax.models.resnet`): ``conv1``/``bn1`` -> ``stem``,
``layer{i}.{j}.conv{k}``/``bn{k}`` -> ``stage{i}_block{j}.conv{k}``, ``downsample.0``/``.1`` ->
``shortcut`` and ``fc`` -> ``head``. The block structure is read from the state dict itself, so
one mapping serves every depth and width; the shape check in :mod:`cnn_flax.convert` then
confirms it is the model asked for.
"""

from __future__ import annotations

import itertools

from cnn_flax.convert.common import StateDictReader


def convert(name: str, sd: StateDictReader) -> dict:
    del name
    params: dict = {}
    stats: dict = {}
    params["stem"], stats["stem"] = sd.conv_bn("conv1", "bn1")
    for i in itertools.count(1):
        if not sd.has(f"layer{i}.0.conv1.weight"):
            break
        for j in itertools.count(0):
            prefix = f"layer{i}.{j}"
            if not sd.has(f"{prefix}.conv1.weight"):
                break
            block_params: dict = {}
            block_stats: dict = {}
            for k in itertools.count(1):
                if not sd.has(f"{prefix}.conv{k}.weight"):
                    break
                block_params[f"conv{k}"], block_stats[f"conv{k}"] = sd.conv_bn(
                    f"{prefix}.conv{k}", f"{prefix}.bn{k}"
                )
            if sd.has(f"{prefix}.downsample.0.weight"):
                block_params["shortcut"], block_stats["shortcut"] = sd.conv_bn(
                    f"{prefix}.downsample.0", f"{prefix}.downsample.1"
                )
            params[f"stage{i}_block{j}"] = block_params
            stats[f"stage{i}_block{j}"] = block_stats
    params["head"] = sd.dense("fc")
    return {"params": params, "batch_stats": stats}
