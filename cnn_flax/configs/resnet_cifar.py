"""CIFAR-10 ResNets and plain twins: the recipe of He et al. 2016, section 4.2.

"We use a weight decay of 0.0001 and momentum of 0.9 ... mini-batch size of 128 ... We start
with a learning rate of 0.1, divide it by 10 at 32k and 48k iterations, and terminate training at
64k iterations ... simple data augmentation: 4 pixels are padded on each side, and a 32x32 crop
is randomly sampled from the padded image or its horizontal flip." For the 110-layer nets "we
use 0.01 to warm up the training until the training error is below 80% (about 400 iterations),
and then go back to 0.1": a 400-step constant warm-up at 0.01 here. Weight decay applies to
every parameter, as in the authors' Torch code; the paper subtracts the per-pixel mean, we
normalise with the CIFAR-10 channel mean and std. float32.

The schedule is written in iterations: ``total_steps = 64000`` with boundaries at epochs 81.92
and 122.88 of 163.84 (= 32k and 48k of 64k iterations at 50,000 images / 128). Setting
``total_steps`` rescales the whole schedule; set ``total_steps=None`` to train by
``num_epochs`` instead.

Expected top-1 (CIFAR-10 test, :data:`EXPECTED_TOP1`): 100 - Table 6's error: resnet20 91.25,
resnet32 92.49, resnet44 92.83, resnet56 93.03, resnet110 93.57. The plain twins have no table
entry; Fig. 6 shows them worse the deeper they are (the degradation problem).

Run::

    python -m cnn_flax.train --config=resnet56 --workdir=/ckpt/resnet56
"""

from __future__ import annotations

import ml_collections

from cnn_flax.configs import base

CIFAR10_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR10_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)

_ITERATIONS = 64_000
_BATCH = 128
_EPOCH_ITERATIONS = 50_000 / _BATCH  # 390.625

EXPECTED_TOP1: dict[str, float | None] = {
    "resnet20": 91.25,
    "resnet32": 92.49,
    "resnet44": 92.83,
    "resnet56": 93.03,
    "resnet110": 93.57,
    "plain20": None,
    "plain32": None,
    "plain44": None,
    "plain56": None,
    "plain110": None,
}


def cifar10_data(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets CIFAR-10 at 32 pixels with pad-4 random crops and flips (He et al. 2016)."""
    data = config.data
    data.name = "cifar10"
    data.train_split = "train"
    data.eval_split = "test"
    data.image_size = 32
    data.eval_crop_ratio = 1.0
    data.mean = CIFAR10_MEAN
    data.std = CIFAR10_STD
    data.augment.inception_crop = False
    data.augment.pad_crop = True
    data.augment.flip = True
    data.shuffle_buffer = 50_000
    data.cache = True
    return config


def get_config(model: str = "resnet56") -> ml_collections.ConfigDict:
    """The CIFAR-10 recipe of He et al. 2016 for ``model``."""
    config = base.get_base_config()
    base.set_model(config, model)
    cifar10_data(config)
    config.dtype = "float32"
    config.batch_size = _BATCH
    config.num_epochs = _ITERATIONS / _EPOCH_ITERATIONS  # 163.84
    config.total_steps = _ITERATIONS
    config.label_smoothing = 0.0
    config.log_every_steps = 200
    config.eval_every_steps = 2000
    config.checkpoint_every_steps = 4000

    opt = config.optimizer
    opt.name = "sgd"
    opt.lr = 0.1 * 256 / _BATCH  # 0.1 at batch 128 under linear scaling
    opt.momentum = 0.9
    opt.nesterov = False
    opt.weight_decay = 1e-4
    opt.weight_decay_mask = "all"

    sched = config.schedule
    sched.name = "step"
    sched.boundaries_epochs = (32_000 / _EPOCH_ITERATIONS, 48_000 / _EPOCH_ITERATIONS)
    sched.decay_factor = 0.1
    if model.endswith("110"):
        sched.warmup_epochs = 400 / _EPOCH_ITERATIONS
        sched.warmup_shape = "constant"
        sched.warmup_init_factor = 0.1
    return config
