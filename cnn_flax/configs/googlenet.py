"""GoogLeNet (Inception v1) on ImageNet: torchvision's default recipe plus auxiliary losses.

Source: torchvision publishes GoogLeNet weights ported from the original model rather than
trained with its scripts (``references/classification/README.md``, from memory), so the
optimisation follows torchvision ``train.py``'s defaults for BatchNorm networks: SGD momentum
0.9, lr 0.1 at batch 256, weight decay 1e-4, StepLR x0.1 every 30 epochs, 90 epochs. The two
auxiliary classifiers add their cross-entropy weighted by 0.3 (Szegedy et al. 2015, "Going Deeper
with Convolutions", section 5). The paper's own schedule (asynchronous SGD, lr x0.96 every 8
epochs, Polyak averaging) is ``schedule.name=exponential``, ``decay_rate=0.96``,
``decay_epochs=8``. bfloat16 compute.

Expected top-1: 69.8% (torchvision's ported IMAGENET1K_V1 weights, 69.778; shared/reference).
The paper reports only top-5 error (10.07% for one model and one crop), so torchvision's figure
is the target. ``googlenet_naive`` has no published number.

Run::

    python -m cnn_flax.train --config=googlenet --workdir=/ckpt/googlenet
"""

from __future__ import annotations

import ml_collections

from cnn_flax.configs import alexnet, base

EXPECTED_TOP1: dict[str, float | None] = {"googlenet": 69.778, "googlenet_naive": None}

AUX_LOSS_WEIGHT = 0.3


def get_config(model: str = "googlenet") -> ml_collections.ConfigDict:
    """The GoogLeNet recipe for ``model``."""
    config = base.get_base_config()
    base.set_model(config, model)
    alexnet.torchvision_step_recipe(config, lr=0.1, weight_decay=1e-4)
    config.aux_loss_weight = AUX_LOSS_WEIGHT
    return config
