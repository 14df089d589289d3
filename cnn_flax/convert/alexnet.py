"""torchvision AlexNet -> cnn_flax AlexNet."""

from __future__ import annotations

from cnn_flax.convert.common import StateDictReader, dense_kernel_from_nchw_flatten

# torchvision's ``features`` indices of the five convolutions.
_CONV_INDICES = (0, 3, 6, 8, 10)


def convert(name: str, sd: StateDictReader) -> dict:
    del name
    params = {
        f"conv{i}": sd.conv(f"features.{j}", bias=True) for i, j in enumerate(_CONV_INDICES, 1)
    }
    params["fc1"] = {
        "kernel": dense_kernel_from_nchw_flatten(sd("classifier.1.weight"), 256, 6, 6),
        "bias": sd("classifier.1.bias"),
    }
    params["fc2"] = sd.dense("classifier.4")
    params["head"] = sd.dense("classifier.6")
    return {"params": params}
