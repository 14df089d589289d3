"""ViT vs ResNet at a matched cost on small data: does the Transformer's lack of convolutional
priors cost it accuracy when images are few?

Dosovitskiy et al. 2021 (sec. 4.2 and fig. 3): on ImageNet-1k alone ViT-B falls behind BiT
ResNets of similar cost and overtakes them only with 14M-300M pre-training images, because it
lacks the locality and translation equivariance that convolutions build in. Here the data are
tiny (1,437 digits at 32 px). Arms, crossed: architecture (a CIFAR ResNet-32, 0.46M parameters,
69M MACs, against a 6-layer ViT with 4-pixel patches, width 128, 0.81M parameters, 58M MACs) x
optimiser (the baseline's SGD with Nesterov momentum, against AdamW with warm-up, the ViT
papers' choice), so each comparison changes one thing.

The CPU design reads the digits at their native 8 px with 2-pixel patches (16 tokens), and both
architectures see background-zero inputs (``data.mean=0, data.std=255``: pixels in [0, 1], the
background 0): issue 18 found that on digits enlarged 4x under the ImageNet normalisation every
4-pixel patch is one grey level far from zero, so the ViT could not tell where a patch was.

Full scale (``--scale=full``): CIFAR-10 at its native 32 px, 4-pixel patches (64 tokens) as in
the small-data ViT studies (e.g. Lee et al. 2021, "Vision Transformer for Small-Size Datasets"),
CIFAR normalisation, padding crops and flips, 200 epochs of batch 128, 5 seeds, each arm at the
best of 0.25x, 1x, 4x its own rate.
"""

from cnn_flax.configs import recipes
from experiments.study import FullScale, Study, Variant, digits_config

_SIZE = 8
_PATCH = 2
# Pixels in [0, 1] with the background at 0, for both architectures (one change, shared).
_BACKGROUND_ZERO = {"data.mean": (0.0, 0.0, 0.0), "data.std": (255.0, 255.0, 255.0)}
_RESNET = {"model": "resnet32", **_BACKGROUND_ZERO}
_VIT = {
    "model": "vit_b_16",
    "model_overrides.patch_size": _PATCH,
    "model_overrides.num_layers": 6,
    "model_overrides.hidden_dim": 128,
    "model_overrides.num_heads": 4,
    "model_overrides.mlp_dim": 256,
    "model_overrides.image_size": _SIZE,
    **_BACKGROUND_ZERO,
}
_VIT_FULL = {"model_overrides.patch_size": 4, "model_overrides.image_size": 32}
# AdamW as ViTs are trained (Dosovitskiy et al. 2021, Table 3: Adam, weight decay, linear warm-up
# then decay), scaled to this budget: peak 1e-3 for batch 32 (base 8e-3 per 256 images).
_ADAMW = {
    "optimizer.name": "adamw",
    "optimizer.lr": 8e-3,
    "optimizer.weight_decay": 0.05,
    "optimizer.weight_decay_mask": "kernels",
}

STUDY = Study(
    name="vit_vs_resnet",
    question="ViT vs a ResNet of similar cost, trained the same budget on small data",
    base_config=lambda **kw: digits_config(**kw, default_image_size=_SIZE),
    variants=(
        Variant("ResNet-32, SGD", dict(_RESNET), group="SGD (baseline recipe)"),
        Variant("ViT 6x128, SGD", dict(_VIT), group="SGD (baseline recipe)"),
        Variant("ResNet-32, AdamW", {**_RESNET, **_ADAMW}, group="AdamW"),
        Variant("ViT 6x128, AdamW", {**_VIT, **_ADAMW}, group="AdamW"),
    ),
    default_steps=400,
    full=FullScale(
        dataset="cifar10",
        image_size=32,
        train_images=50_000,
        num_classes=10,
        epochs=200,
        batch_size=128,
        seeds=(0, 1, 2, 3, 4),
        basis="Dosovitskiy et al. 2021 sec. 4.2 (small-data regime), at CIFAR-10 size",
        changes={
            "data.mean": recipes.CIFAR10_MEAN,
            "data.std": recipes.CIFAR10_STD,
            "data.augment.pad_crop": True,
            "data.augment.flip": True,
            "data.eval_crop_ratio": 1.0,
            "schedule.warmup_epochs": 5.0,
        },
        arm_changes={"ViT 6x128, SGD": _VIT_FULL, "ViT 6x128, AdamW": _VIT_FULL},
        lr_sweep=("x0.25", "x1", "x4"),
    ),
)
