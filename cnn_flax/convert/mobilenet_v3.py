"""torchvision MobileNet v3 (large and small) -> cnn_flax MobileNetV3."""

from __future__ import annotations

from cnn_flax.convert.common import StateDictReader
from cnn_flax.convert.inverted_residual import sequential_block


def convert(name: str, sd: StateDictReader) -> dict:
    del name  # large and small differ only in how many blocks the state dict holds
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("features.0.0", "features.0.1")
    k = 1
    while sd.has(f"features.{k}.block.0.0.weight"):
        params[f"block{k}"], stats[f"block{k}"] = sequential_block(sd, f"features.{k}.block")
        k += 1
    params["head_conv"], stats["head_conv"] = sd.conv_bn(f"features.{k}.0", f"features.{k}.1")
    params["head_fc"] = sd.dense("classifier.0")
    params["head"] = sd.dense("classifier.3")
    return {"params": params, "batch_stats": stats}
