"""torchvision VGG -> cnn_flax VGG.

torchvision keeps the convolutional part in one ``features`` Sequential: per convolution a
``Conv2d`` (then a ``BatchNorm2d`` in the ``*_bn`` variants) and a ReLU, per stage a closing
``MaxPool2d``. The indices follow from the model's stage spec.
"""

from __future__ import annotations

from cnn_flax.convert.common import StateDictReader, dense_kernel_from_nchw_flatten
from cnn_flax.models import create_model


def convert(name: str, sd: StateDictReader) -> dict:
    model = create_model(name)
    params: dict = {}
    stats: dict = {}
    index = 0
    for i, stage in enumerate(model.stages, start=1):
        for j in range(stage.num_convs):
            block = f"stage{i}_block{j}"
            params[block] = {"conv": sd.conv(f"features.{index}", bias=True)}
            index += 1
            if model.batch_norm:
                bn_params, bn_stats = sd.batch_norm(f"features.{index}")
                params[block]["bn"] = bn_params
                stats[block] = {"bn": bn_stats}
                index += 1
            index += 1  # ReLU
        index += 1  # MaxPool2d
    # Linear(C * 7 * 7, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear.
    size = model.pool_size
    params["fc1"] = {
        "kernel": dense_kernel_from_nchw_flatten(
            sd("classifier.0.weight"), model.stages[-1].features, size, size
        ),
        "bias": sd("classifier.0.bias"),
    }
    params["fc2"] = sd.dense("classifier.3")
    params["head"] = sd.dense("classifier.6")
    out = {"params": params}
    if stats:
        out["batch_stats"] = stats
    return out
