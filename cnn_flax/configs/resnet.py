"""ImageNet ResNets, ResNeXt, Wide ResNets and their plain twins: the modern 90-epoch recipe.

Architectures: He et al. 2016, "Deep Residual Learning for Image Recognition"; Xie et al. 2017,
"Aggregated Residual Transformations" (ResNeXt); Zagoruyko and Komodakis 2016, "Wide Residual
Networks"; plain twins as in He et al. Table 2.

Recipe: SGD with Nesterov momentum 0.9, base lr 0.1 per 256 images (peak 0.4 at batch 1024;
Goyal et al. 2017), 5 linear warm-up epochs then cosine decay to 0 (He et al. 2019, "Bag of
Tricks"), weight decay 1e-4 off BatchNorm and biases ("no bias decay", same paper), label
smoothing 0.1 (Szegedy et al. 2016), 90 epochs, global batch 1024, bfloat16 compute. Inception
crop + flip at 224, evaluation on the 224 centre crop of a 256 resize (ratio 0.875).

Expected top-1 (ImageNet-1k val, single 224 crop): at least the torchvision IMAGENET1K_V1
weights trained with the older step recipe (:data:`EXPECTED_TOP1`; resnet50 76.13, flax
examples/imagenet gets 76.3-76.7 with 100 epochs); cosine + label smoothing usually add a few
tenths. The plain twins' figures are He et al. Table 2 (10-crop), where the plain net loses to
its residual twin.

Run (8 GPUs or more)::

    python -m cnn_flax.train --config=resnet50 --workdir=/ckpt/resnet50
    python -m cnn_flax.train --config=resnet18 --workdir=/ckpt/resnet18 --config.batch_size=512
"""

from __future__ import annotations

import ml_collections

from cnn_flax.configs import base

# torchvision IMAGENET1K_V1 top-1 (resnet18/34 from shared/reference/torchvision_models.csv,
# resnet50 from shared/reference/README.md, the rest from torchvision's model documentation);
# plain18/34: 100 - He et al. 2016 Table 2 top-1 error (10-crop). plain50: no published number.
EXPECTED_TOP1: dict[str, float | None] = {
    "resnet18": 69.758,
    "resnet34": 73.314,
    "resnet50": 76.130,
    "resnet101": 77.374,
    "resnet152": 78.312,
    "resnext50_32x4d": 77.618,
    "wide_resnet50_2": 78.468,
    "plain18": 72.06,
    "plain34": 71.46,
    "plain50": None,
}


def get_config(model: str = "resnet50") -> ml_collections.ConfigDict:
    """The ImageNet ResNet recipe for ``model``."""
    config = base.get_base_config()
    base.set_model(config, model)
    # The registry's crop ratio of some ResNets (224/232) belongs to torchvision's V2 weights and
    # their 600-epoch recipe; the 90-epoch recipe evaluates 224 of 256.
    config.data.image_size = 224
    config.data.eval_crop_ratio = 0.875
    config.dtype = "bfloat16"
    config.batch_size = 1024
    config.num_epochs = 90.0
    config.label_smoothing = 0.1
    config.eval_every_steps = 2500  # ~2 epochs at batch 1024
    config.checkpoint_every_steps = 2500

    opt = config.optimizer
    opt.name = "sgd"
    opt.lr = 0.1
    opt.momentum = 0.9
    opt.nesterov = True
    opt.weight_decay = 1e-4
    opt.weight_decay_mask = "no_bn_bias"

    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 5.0
    return config
