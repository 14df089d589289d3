"""AlexNet on ImageNet: torchvision's recipe.

Source: torchvision ``references/classification/README.md`` (section "AlexNet and VGG", quoted
from memory): ``torchrun --nproc_per_node=8 train.py --model alexnet --lr 1e-2``, i.e. the
script's defaults with a tenth of the learning rate: SGD momentum 0.9, lr 0.01 at batch 256
(32 per GPU x 8), weight decay 1e-4 on every parameter, StepLR x0.1 every 30 epochs, 90 epochs,
Inception crop + flip at 224, evaluation on the 224 centre crop of a 256 resize. bfloat16 compute
here (torchvision trained in float32).

Expected top-1: 56.5% (torchvision IMAGENET1K_V1, 56.522; shared/reference).

Run::

    python -m cnn_flax.train --config=alexnet --workdir=/ckpt/alexnet
"""

from __future__ import annotations

import ml_collections

from cnn_flax.configs import base

EXPECTED_TOP1: dict[str, float | None] = {"alexnet": 56.522}


def torchvision_step_recipe(
    config: ml_collections.ConfigDict, *, lr: float, weight_decay: float
) -> ml_collections.ConfigDict:
    """torchvision ``train.py`` defaults: SGD 0.9, StepLR(30, 0.1), 90 epochs, batch 256."""
    config.dtype = "bfloat16"
    config.batch_size = 256
    config.num_epochs = 90.0
    config.label_smoothing = 0.0
    config.eval_every_steps = 10_000  # ~2 epochs at batch 256
    config.checkpoint_every_steps = 10_000
    opt = config.optimizer
    opt.name = "sgd"
    opt.lr = lr
    opt.momentum = 0.9
    opt.nesterov = False
    opt.weight_decay = weight_decay
    opt.weight_decay_mask = "all"  # torchvision's default (--norm-weight-decay unset)
    sched = config.schedule
    sched.name = "step"
    sched.warmup_epochs = 0.0
    sched.boundaries_epochs = (30.0, 60.0)
    sched.decay_factor = 0.1
    config.data.image_size = 224
    config.data.eval_crop_ratio = 0.875
    return config


def get_config(model: str = "alexnet") -> ml_collections.ConfigDict:
    """The torchvision AlexNet recipe."""
    config = base.get_base_config()
    base.set_model(config, model)
    return torchvision_step_recipe(config, lr=0.01, weight_decay=1e-4)
