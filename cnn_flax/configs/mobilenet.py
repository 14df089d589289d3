"""MobileNet v1, v2 and v3 on ImageNet: the TensorFlow TPU reference recipe.

Source: the MnasNet/MobileNetV3/EfficientNet training code in github.com/tensorflow/tpu
(``models/official/mnasnet``, ``models/official/efficientnet``; hyperparameters quoted from
memory): RMSProp as ``tf.compat.v1.train.RMSPropOptimizer`` (decay 0.9, momentum 0.9, epsilon
1e-3 inside the square root, mean square started at 1.0, learning rate inside the momentum),
base lr 0.016 per 256 images (peak 0.064 at batch 1024), 5 warm-up epochs, then x0.97 every 2.4
epochs (staircase, counted from step 0), weight decay 1e-5 as an L2 loss on conv/dense kernels,
label smoothing 0.1, an exponential moving average of the weights with decay 0.9999 (with TF's
``num_updates`` warm-up) used for evaluation, 350 epochs, batch 1024, bfloat16. MobileNetV3
(Howard et al. 2019, section 6.1) adds AutoAugment-free training in the paper; torchvision
trained its V3 weights with AutoAugment, so v3 uses AutoAugment policy v0 here. v1 and v2 use
their papers' weight decay 4e-5 (Howard et al. 2017; Sandler et al. 2018, section 6.1) and no
AutoAugment, as their papers. Dropout before the classifier is the model's own default (v1
0.001, v2 and v3 0.2). Resolution and evaluation crop come from the model registry.

Expected top-1 (:data:`EXPECTED_TOP1`): the papers' figures: v1 70.6 / 68.4 / 63.7 / 50.6 for
width 1.0 / 0.75 / 0.5 / 0.25 and 71.7 for the full-convolution baseline (Howard et al. 2017,
Tables 4 and 6), v2 72.0 (Sandler et al. 2018; torchvision's V1 weights 71.878), v3 large 75.2 and
small 67.4 (Howard et al. 2019, Table 3).

Run::

    python -m cnn_flax.train --config=mobilenet_v2 --workdir=/ckpt/mobilenet_v2
"""

from __future__ import annotations

import ml_collections

from cnn_flax.configs import base

EXPECTED_TOP1: dict[str, float | None] = {
    "mobilenet_v1": 70.6,
    "mobilenet_v1_075": 68.4,
    "mobilenet_v1_050": 63.7,
    "mobilenet_v1_025": 50.6,
    "mobilenet_v1_full_conv": 71.7,
    "mobilenet_v2": 72.0,
    "mobilenet_v3_large": 75.2,
    "mobilenet_v3_small": 67.4,
}


def tf_tpu_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The shared MnasNet/EfficientNet TPU recipe (RMSProp, exponential decay, EMA, 350 epochs)."""
    config.dtype = "bfloat16"
    config.batch_size = 1024
    config.num_epochs = 350.0
    config.label_smoothing = 0.1
    config.ema_decay = 0.9999
    config.ema_warmup = True
    config.eval_every_steps = 2500  # ~2 epochs at batch 1024
    config.checkpoint_every_steps = 2500

    opt = config.optimizer
    opt.name = "rmsprop"
    opt.lr = 0.016
    opt.rmsprop_decay = 0.9
    opt.momentum = 0.9
    opt.eps = 1e-3
    opt.tf_style_eps = True
    opt.rmsprop_initial_scale = 1.0
    opt.weight_decay = 1e-5
    opt.weight_decay_mask = "no_bn_bias"

    sched = config.schedule
    sched.name = "exponential"
    sched.warmup_epochs = 5.0
    sched.decay_rate = 0.97
    sched.decay_epochs = 2.4
    sched.staircase = True
    return config


def get_config(model: str = "mobilenet_v2") -> ml_collections.ConfigDict:
    """The MobileNet recipe for ``model``."""
    config = base.get_base_config()
    base.set_model(config, model)
    tf_tpu_recipe(config)
    if "v3" in model:
        config.data.augment.autoaugment = "v0"
    else:
        config.optimizer.weight_decay = 4e-5
    return config
