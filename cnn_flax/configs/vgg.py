"""VGG on ImageNet: torchvision's recipe with the VGG paper's weight decay.

Source: torchvision ``references/classification/README.md`` (section "AlexNet and VGG", quoted
from memory): VGG without BatchNorm is trained with ``--lr 1e-2`` and the script's other
defaults (SGD momentum 0.9, batch 256, StepLR x0.1 every 30 epochs, 90 epochs); the ``*_bn``
variants use the defaults, lr 0.1. Weight decay 5e-4 is Simonyan and Zisserman 2015, section 3.1
(torchvision's default is 1e-4), on every parameter. Inception crop + flip at 224; evaluation on
the 224 centre crop of a 256 resize. bfloat16 compute.

The ``*_cifar`` variants (32-pixel adaptations for the kernel-size ablation, no published
accuracy) take the CIFAR-10 recipe of :mod:`cnn_flax.configs.resnet_cifar` with weight decay
5e-4.

Expected top-1 (:data:`EXPECTED_TOP1`, torchvision IMAGENET1K_V1 from shared/reference):
vgg11 69.02, vgg13 69.93, vgg16 71.59, vgg19 72.38; with BatchNorm 70.37, 71.59, 73.36, 74.22.

Run::

    python -m cnn_flax.train --config=vgg16 --workdir=/ckpt/vgg16
"""

from __future__ import annotations

import ml_collections

from cnn_flax.configs import alexnet, base, resnet_cifar

EXPECTED_TOP1: dict[str, float | None] = {
    "vgg11": 69.02,
    "vgg11_bn": 70.37,
    "vgg13": 69.928,
    "vgg13_bn": 71.586,
    "vgg16": 71.592,
    "vgg16_bn": 73.36,
    "vgg19": 72.376,
    "vgg19_bn": 74.218,
    "vgg13_bn_cifar": None,
    "vgg13_bn_cifar_5x5": None,
    "vgg16_bn_cifar": None,
    "vgg16_bn_cifar_5x5_7x7": None,
}


def get_config(model: str = "vgg16") -> ml_collections.ConfigDict:
    """The VGG recipe for ``model`` (ImageNet, or CIFAR-10 for the ``*_cifar`` variants)."""
    if model.endswith("_cifar") or "_cifar_" in model:
        config = resnet_cifar.get_config(model)
        config.optimizer.weight_decay = 5e-4
        return config
    config = base.get_base_config()
    base.set_model(config, model)
    lr = 0.1 if "_bn" in model else 0.01
    return alexnet.torchvision_step_recipe(config, lr=lr, weight_decay=5e-4)
