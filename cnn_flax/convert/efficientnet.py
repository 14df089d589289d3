"""torchvision EfficientNet B0-B7 -> cnn_flax EfficientNet (the Lite variants have no torchvision
model)."""

from __future__ import annotations

from cnn_flax.convert.common import StateDictReader
from cnn_flax.convert.inverted_residual import sequential_block


def convert(name: str, sd: StateDictReader) -> dict:
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
            params[key], stats[key] = sequential_block(sd, f"features.{s}.{j}.block")
            j += 1
        s += 1
    params["head_conv"], stats["head_conv"] = sd.conv_bn(f"features.{s}.0", f"features.{s}.1")
    params["head"] = sd.dense("classifier.1")
    return {"params": params, "batch_stats": stats}
