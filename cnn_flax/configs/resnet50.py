"""ResNet-50 on ImageNet: the :mod:`cnn_flax.configs.resnet` recipe (90 epochs, SGD Nesterov,
cosine, label smoothing 0.1, batch 1024, bfloat16).

Expected top-1: >= 76.1% (torchvision IMAGENET1K_V1 76.130; flax examples/imagenet 76.3-76.7%).

Run::

    python -m cnn_flax.train --config=resnet50 --workdir=/ckpt/resnet50
"""

from __future__ import annotations

import ml_collections

from cnn_flax.configs import resnet


def get_config() -> ml_collections.ConfigDict:
    """Returns the ResNet-50 recipe."""
    return resnet.get_config("resnet50")
