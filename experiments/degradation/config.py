"""Degradation: does a deeper plain network train worse than a shallower one, and do skip
connections fix it?

He et al. 2016 ("Deep Residual Learning for Image Recognition", fig. 1, 4 and 6): a 56-layer plain
CIFAR net has *higher training* error than a 20-layer one, so the problem is optimisation, not
overfitting; the residual twins reverse the order. Each arm changes one thing against its twin:
``plainN`` -> ``resnetN`` adds the identity shortcuts (same layers, same parameters for the
CIFAR option-A nets), and 20 -> 56 (or 18 -> 34) changes only the depth.

CIFAR-style nets run at 16 px, ImageNet-style ones (stem stride 4) at 32 px with base width 16.

Full scale (``--scale=full``): the paper's CIFAR-10 experiment (sec. 4.2, fig. 6) for the four
CIFAR-style arms: 32 px, batch 128, 64k iterations, lr 0.1 divided by 10 at 32k and 48k, weight
decay 1e-4, momentum 0.9, 4-pixel padding and crops, flips, no warm-up; 5 seeds, each arm at the
best of 0.5x, 1x, 2x the paper's rate. The ImageNet-style arms need ImageNet itself (fig. 4).
"""

from cnn_flax.configs import recipes
from experiments.study import FullScale, Study, Variant, digits_config

_IMAGENET = {"data.image_scale": 2, "model_overrides.width_mult": 0.25}

STUDY = Study(
    name="degradation",
    question="Plain vs residual at equal depth: does depth hurt plain nets' training loss?",
    base_config=lambda **kw: digits_config(**kw, default_image_size=16),
    variants=(
        Variant("plain20", {"model": "plain20"}, group="CIFAR-style, 16 px"),
        Variant("plain56", {"model": "plain56"}, group="CIFAR-style, 16 px"),
        Variant("resnet20", {"model": "resnet20"}, group="CIFAR-style, 16 px"),
        Variant("resnet56", {"model": "resnet56"}, group="CIFAR-style, 16 px"),
        Variant("plain18", {"model": "plain18", **_IMAGENET}, group="ImageNet-style, width 16"),
        Variant("plain34", {"model": "plain34", **_IMAGENET}, group="ImageNet-style, width 16"),
        Variant("resnet18", {"model": "resnet18", **_IMAGENET}, group="ImageNet-style, width 16"),
        Variant("resnet34", {"model": "resnet34", **_IMAGENET}, group="ImageNet-style, width 16"),
    ),
    plot="curves",
    default_steps=150,
    metrics=("final_train_loss", "eval_top1"),  # the claim is about training
    full=FullScale(
        dataset="cifar10",
        image_size=32,
        train_images=50_000,
        num_classes=10,
        epochs=64_000 * 128 / 50_000,  # 64k iterations of batch 128
        batch_size=128,
        seeds=(0, 1, 2, 3, 4),
        basis="He et al. 2016, sec. 4.2 (CIFAR-10, fig. 6)",
        # The recipe, augmentation and normalisation of configs.recipes' CIFAR-10 ResNet; the
        # runner sets steps, batch and cadences.
        changes={
            **{
                k: v
                for k, v in recipes.CIFAR10_RESNET.items()
                if k.startswith(("optimizer.", "schedule.", "data.")) and k != "data.name"
            },
            "schedule.warmup_epochs": 0.0,
        },
        variants=(0, 1, 2, 3),
        lr_sweep=("x0.5", "x1", "x2"),
    ),
)
