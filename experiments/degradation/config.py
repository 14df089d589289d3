"""Degradation: does a deeper plain network train worse than a shallower one, and do skip
connections fix it?

He et al. 2016 ("Deep Residual Learning for Image Recognition", fig. 1, 4 and 6): a 56-layer plain
CIFAR net has *higher training* error than a 20-layer one, so the problem is optimisation, not
overfitting; the residual twins reverse the order. Each arm changes one thing against its twin:
``plainN`` -> ``resnetN`` adds the identity shortcuts (same layers, same parameters for the
CIFAR option-A nets), and 20 -> 56 (or 18 -> 34) changes only the depth.

CIFAR-style nets run at 16 px, ImageNet-style ones (stem stride 4) at 32 px with base width 16.
"""

from experiments.study import Study, Variant, digits_config

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
)
