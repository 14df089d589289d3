"""torchvision MobileNet v2 -> cnn_flax MobileNetV2 (MobileNet v1 has no torchvision model)."""

from __future__ import annotations

from cnn_flax.convert.common import StateDictReader
from cnn_flax.convert.inverted_residual import v2_block


def convert(name: str, sd: StateDictReader) -> dict:
    if name != "mobilenet_v2":
        raise ValueError(f"No torchvision mapping for {name!r}; only mobilenet_v2 has one.")
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("features.0.0", "features.0.1")
    k = 1
    # features.1 .. features.N-1 are blocks; the last entry is the 1x1 head convolution.
    while sd.has(f"features.{k}.conv.0.0.weight"):
        params[f"block{k}"], stats[f"block{k}"] = v2_block(sd, f"features.{k}.conv")
        k += 1
    params["head_conv"], stats["head_conv"] = sd.conv_bn(f"features.{k}.0", f"features.{k}.1")
    params["head"] = sd.dense("classifier.1")
    return {"params": params, "batch_stats": stats}
