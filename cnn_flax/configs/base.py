"""Shared defaults of every training recipe.

Each recipe module starts from :func:`get_base_config` and changes only what its reference
changes, so the schema (which the trainer, data pipeline and optimiser read) is defined once,
here. Fields whose default is "unset" are typed placeholders: they hold ``None`` but still accept
only their declared type, so ``--config.total_steps=abc`` fails before any compute.

The learning rate is the BASE rate for a global batch of 256 (Goyal et al. 2017, "Accurate,
Large Minibatch SGD"): the peak rate is ``optimizer.lr * batch_size / 256`` unless
``optimizer.lr_scaling == "none"``.

Epoch-valued schedule fields (``warmup_epochs``, ``boundaries_epochs``, ``decay_epochs``) are
converted to steps with ``total_steps / num_epochs``; when ``total_steps`` is set it therefore
compresses (or stretches) the whole schedule, so a short run keeps the recipe's shape.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from cnn_flax.data.mixing import IMAGENET_MEAN, IMAGENET_STD  # 0-255, from the models' contract


def get_optimizer_config() -> ml_collections.ConfigDict:
    """Optimiser fields (read by :func:`cnn_flax.training.optim.create_optimizer`)."""
    opt = ml_collections.ConfigDict()
    opt.name = "sgd"  # sgd | adamw | rmsprop | lars | lamb
    opt.lr = 0.1  # base learning rate for a global batch of 256
    opt.lr_scaling = "linear"  # linear: peak = lr * batch_size / 256; none: peak = lr
    opt.momentum = 0.9  # sgd, rmsprop, lars (0 turns momentum off)
    opt.nesterov = False  # sgd, adamw (NAdamW), lars
    opt.weight_decay = 1e-4
    # no_bn_bias: no decay on biases and BatchNorm scale/bias (leaf named "bias"/"scale" or
    # ndim <= 1); kernels: decay only conv/dense kernels (not embeddings, tokens, layer scales);
    # no_norm: no decay on norm layers only, biases decayed (torchvision's --norm-weight-decay 0);
    # all: decay every parameter.
    opt.weight_decay_mask = "no_bn_bias"
    opt.b1 = 0.9  # adamw, lamb
    opt.b2 = 0.999  # adamw, lamb
    opt.eps = 1e-8  # adamw, lamb, rmsprop, lars
    opt.rmsprop_decay = 0.9
    # TensorFlow's RMSProp divides by sqrt(ms + eps) (eps inside the root) where PyTorch divides
    # by sqrt(ms) + eps; the TF reference recipes (MnasNet, EfficientNet) assume the former.
    opt.tf_style_eps = True
    # tf.compat.v1.train.RMSPropOptimizer starts the mean square at 1.0, PyTorch/Keras at 0.0.
    opt.rmsprop_initial_scale = 0.0
    opt.rmsprop_centered = False
    opt.trust_coefficient = 0.001  # lars
    return opt


def get_schedule_config() -> ml_collections.ConfigDict:
    """Learning-rate schedule fields (read by
    :func:`cnn_flax.training.optim.create_learning_rate_schedule`).

    Every schedule starts with a linear warm-up from ``warmup_init_factor * peak`` to the peak.
    """
    sched = ml_collections.ConfigDict()
    sched.name = "cosine"  # cosine | step | linear | exponential | constant
    sched.warmup_epochs = 0.0
    sched.warmup_init_factor = 0.0
    # linear: ramp from warmup_init_factor * peak to peak; constant: hold warmup_init_factor * peak
    # (He et al. 2016's 0.01 warm-up of ResNet-110 on CIFAR-10).
    sched.warmup_shape = "linear"
    sched.end_lr_factor = 0.0  # cosine / linear: final lr = peak * end_lr_factor
    sched.boundaries_epochs = (30.0, 60.0)  # step: multiply by decay_factor at each boundary
    sched.decay_factor = 0.1  # step
    sched.decay_epochs = 2.4  # exponential: lr = peak * decay_rate ** (step / decay_steps)
    sched.decay_rate = 0.97  # exponential
    sched.staircase = True  # exponential: decay in whole periods, as tf.train.exponential_decay
    return sched


def get_data_config() -> ml_collections.ConfigDict:
    """Input-pipeline fields (read by :mod:`cnn_flax.data`), the only home of their defaults.

    The data code reads these fields directly; code that builds a data config of its own starts
    from this one and changes fields.
    """
    data = ml_collections.ConfigDict()
    data.name = "imagenet2012"
    data.data_dir = config_dict.placeholder(str)  # None -> $TFDS_DATA_DIR -> tfds default
    # None: the data set's own splits (imagenet2012: train/validation; cifar, digits: train/test).
    data.train_split = config_dict.placeholder(str)
    data.eval_split = config_dict.placeholder(str)
    # FixRes (Touvron et al. 2019): train and evaluate at different sizes, e.g. torchvision's V2
    # recipe trains on 176 px crops and evaluates 224 px centre crops of images resized to 232.
    data.image_size = 224  # train crop side (torchvision --train-crop-size)
    data.eval_crop_size = config_dict.placeholder(int)  # eval centre crop; None: image_size
    # Shorter side the eval image is resized to before the centre crop (--val-resize-size);
    # None: round(eval crop size / eval_crop_ratio), e.g. 224 / 0.875 = 256.
    data.eval_resize_size = config_dict.placeholder(int)
    data.eval_crop_ratio = 0.875  # read only while eval_resize_size is None
    data.mean = IMAGENET_MEAN
    data.std = IMAGENET_STD
    # folder:<path> data sets skip (and report) larger images: one 12000x12000 JPEG would take
    # several GB through decoding and resizing. PIL's own decompression-bomb threshold.
    data.max_image_pixels = 89_478_485
    aug = ml_collections.ConfigDict()
    aug.inception_crop = True
    aug.flip = True
    aug.pad_crop = False  # small images: pad 4 pixels and take a random crop
    aug.randaugment = ml_collections.ConfigDict({"num_layers": 0, "magnitude": 9})  # 0 = off
    aug.autoaugment = config_dict.placeholder(str)  # e.g. "v0"
    # TrivialAugment Wide (Mueller & Hutter 2021) as torchvision's TrivialAugmentWide in its
    # recipe: 14 ops, 31 magnitude bins, bilinear, black fill; exclusive with the two above.
    aug.trivial_augment_wide = False
    # Per batch, mixup or CutMix with probability 1/2 each when both alphas are > 0 (torchvision's
    # RandomChoice); each example is mixed with its predecessor in the batch.
    aug.mixup_alpha = 0.0
    aug.cutmix_alpha = 0.0
    # Random erasing (Zhong et al. 2020): probability per image, on device after normalisation as
    # in torchvision (scale 0.02-0.33, ratio 0.3-3.3, value 0 = the mean colour).
    aug.random_erasing = 0.0
    aug.random_erasing_noise = False  # erase with N(0, 1) noise (torchvision value="random")
    data.augment = aug
    # Repeated augmentation (Hoffer et al. 2020; torchvision's RASampler): each drawn image
    # appears this many times in its global batch, differently augmented; an epoch stays
    # num_train examples long, so it holds num_train / repeats distinct images. 1 = off.
    data.repeated_augmentation = 1
    data.shuffle_buffer = 16 * 1024
    data.cache = False
    data.num_parallel_calls = -1  # tf.data.AUTOTUNE
    data.prefetch = 2
    return data


def get_finetune_config() -> ml_collections.ConfigDict:
    """How a run started from ``init_from`` treats the weights (read by
    :mod:`cnn_flax.training.finetune`, :func:`cnn_flax.training.optim.create_optimizer` and the
    train step)."""
    ft = ml_collections.ConfigDict()
    # Naming scheme of an init_from weights file ("torchvision", "timm", ...); None: detected
    # from its keys (cnn_flax.weights.load).
    ft.weights_format = config_dict.placeholder(str)
    # The classifier (the "head" subtree) is re-initialised when the class count differs from the
    # weights' and kept when it matches; True re-initialises it always (same count, new classes).
    ft.reset_head = False
    # all: every parameter trains. head: a linear probe, only the head trains; the backbone and
    # its BatchNorm statistics stay as loaded (and the backward pass skips the backbone).
    ft.trainable = "all"
    # BatchNorm normalises with the loaded running statistics in training too and never updates
    # them (FrozenBatchNorm): for batches too small for good statistics.
    ft.freeze_bn_stats = False
    # Learning rate of everything outside the head, as a multiple of the schedule's (the head's):
    # pretrained features need smaller steps than a new classifier. 0 freezes them.
    ft.backbone_lr_mult = 1.0
    # A fine-tuning recipe refuses to start without init_from (it would train from random weights
    # and look like a fine-tune); True starts from random weights on purpose (a study's control).
    ft.from_scratch = False
    return ft


def get_base_config() -> ml_collections.ConfigDict:
    """The shared defaults; every recipe starts here."""
    config = ml_collections.ConfigDict()
    config.model = "resnet50"
    # Passed to create_model(config.model, **model_overrides); new keys may be added from the
    # command line (the model checks their names).
    config.model_overrides = ml_collections.ConfigDict()
    config.dtype = "bfloat16"  # compute dtype; parameters and optimiser state stay float32
    config.seed = 0
    config.batch_size = 1024  # GLOBAL batch over all devices and processes
    config.num_epochs = 90.0
    config.total_steps = config_dict.placeholder(int)  # set: overrides num_epochs
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 5000
    config.keep_checkpoints = 3
    config.keep_best = True
    config.label_smoothing = 0.0
    config.aux_loss_weight = 0.0  # GoogLeNet auxiliary classifiers
    config.ema_decay = config_dict.placeholder(float)  # None: no EMA of the weights
    # TF's ExponentialMovingAverage(num_updates=step): decay = min(decay, (1+t)/(10+t)).
    config.ema_warmup = False
    # torchvision's --model-ema (references/classification/train.py; training.run_plan.EmaPlan):
    # average after every N-th update of each epoch (--model-ema-steps), with the decay adjusted
    # to 1 - min(1, (1 - ema_decay) * batch_size * N / num_epochs), copying the weights through
    # the learning-rate warm-up, and averaging the BatchNorm statistics too (use_buffers=True).
    config.ema_every_steps = 1
    config.ema_adjust = False
    config.ema_copy_in_warmup = False
    config.ema_batch_stats = False
    config.bn_mode = "global"  # global | per_device
    # Running-variance update of BatchNorm: "unbiased" (torch's, n / (n - 1) times the batch
    # variance, as torchvision's recipes ran) or "biased" (Flax's and Keras's; runs made before
    # torch's became the default). cnn_flax.models.norm.BatchNorm.
    config.bn_running_var = "unbiased"
    # Before each evaluation, re-estimate BatchNorm statistics on this many training batches
    # (train mode, equally weighted average, as torch.optim.swa_utils.update_bn); 0: evaluate with
    # the running statistics as trained. cnn_flax.training.bn_reestimate.
    config.bn_reestimate_batches = 0
    config.grad_accum_steps = 1
    config.clip_grad_norm = config_dict.placeholder(float)
    config.loss_scale = ml_collections.ConfigDict({"initial": 2.0**15, "growth_interval": 2000})
    config.compilation_cache_dir = config_dict.placeholder(str)
    # What the recipe is and what it should reach; set by configs.recipes.model_config.
    config.recipe = ""
    config.target_top1 = config_dict.placeholder(float)
    # Start from pretrained weights instead of a random initialisation: a variables checkpoint
    # (python -m cnn_flax.convert), a training workdir (its latest checkpoint) or a weights file /
    # URL in a format cnn_flax.weights.load reads. None: random initialisation. See finetune.
    config.init_from = config_dict.placeholder(str)
    config.finetune = get_finetune_config()
    config.optimizer = get_optimizer_config()
    config.schedule = get_schedule_config()
    config.data = get_data_config()
    return config


def set_model(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Sets ``config.model`` and, if the model is registered, its resolution, crop ratio and the
    input normalisation of its default weights (the ImageNet statistics unless they differ).

    A model another part of the project has not registered yet keeps the recipe's defaults, so
    recipes load while families are still being written; ``create_model`` checks the name later.
    """
    from cnn_flax.models import list_models, model_info

    config.model = name
    if name in list_models():
        info = model_info(name)
        config.data.image_size = info.resolution
        config.data.eval_crop_ratio = info.eval_crop_ratio
        weights = info.default_weights()
        if weights is not None:
            config.data.mean = tuple(m * 255 for m in weights.mean)
            config.data.std = tuple(s * 255 for s in weights.std)
    return config
