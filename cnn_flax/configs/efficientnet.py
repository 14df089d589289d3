"""EfficientNet B0-B7 and EfficientNet-Lite0-4 on ImageNet: the TensorFlow TPU reference recipe.

Source: Tan and Le 2019, "EfficientNet", section 5.2 ("RMSProp optimizer with decay 0.9 and
momentum 0.9; batch norm momentum 0.99; weight decay 1e-5; initial learning rate 0.256 that
decays by 0.97 every 2.4 epochs ... SiLU (Swish-1) activation, AutoAugment, and stochastic depth
with survival probability 0.8 ... dropout ratio from 0.2 for B0 to 0.5 for B7") and its code
(github.com/tensorflow/tpu ``models/official/efficientnet``, from memory: 0.256 is 0.016 per 256
images at batch 4096, 5 warm-up epochs, epsilon 1e-3, label smoothing 0.1, EMA 0.9999, 350
epochs, AutoAugment policy v0). Shared with :func:`cnn_flax.configs.mobilenet.tf_tpu_recipe`.
Batch 1024 here (peak lr 0.064); the linear scaling rule keeps the same base rate at 4096.
Stochastic depth ``drop_path_rate=0.2`` (the last block's rate; earlier blocks scale linearly),
dropout is each variant's own (0.2 ... 0.5, in the model registry). Resolution and evaluation crop
come from the registry: B0-B7 224-600 pixels. The Lite variants (no SE, ReLU6) take the same
recipe.

Expected top-1 (:data:`EXPECTED_TOP1`): the paper's Table 2: B0 77.1, B1 79.1, B2 80.1, B3 81.6,
B4 82.9, B5 83.6, B6 84.0, B7 84.3 (torchvision's ported weights: 77.69 ... 84.12, see
shared/reference); Lite0-4 75.1 / 76.7 / 77.6 / 79.8 / 81.5 (the Lite release README, from
memory).

Run::

    python -m cnn_flax.train --config=efficientnet_b0 --workdir=/ckpt/efficientnet_b0
"""

from __future__ import annotations

import ml_collections

from cnn_flax.configs import base, mobilenet

EXPECTED_TOP1: dict[str, float | None] = {
    "efficientnet_b0": 77.1,
    "efficientnet_b1": 79.1,
    "efficientnet_b2": 80.1,
    "efficientnet_b3": 81.6,
    "efficientnet_b4": 82.9,
    "efficientnet_b5": 83.6,
    "efficientnet_b6": 84.0,
    "efficientnet_b7": 84.3,
    "efficientnet_lite0": 75.1,
    "efficientnet_lite1": 76.7,
    "efficientnet_lite2": 77.6,
    "efficientnet_lite3": 79.8,
    "efficientnet_lite4": 81.5,
}


def get_config(model: str = "efficientnet_b0") -> ml_collections.ConfigDict:
    """The EfficientNet recipe for ``model``."""
    config = base.get_base_config()
    base.set_model(config, model)
    mobilenet.tf_tpu_recipe(config)
    config.model_overrides.drop_path_rate = 0.2
    config.data.augment.autoaugment = "v0"
    return config
