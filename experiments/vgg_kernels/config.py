"""Stacked 3x3 convolutions vs one larger kernel with the same receptive field.

Simonyan and Zisserman 2015 ("Very Deep Convolutional Networks", sec. 2.3 and 4.1): two stacked
3x3 convolutions see 5x5 pixels and three see 7x7, with fewer weights (18C^2 and 27C^2 against
25C^2 and 49C^2) and more non-linearities in between; net B (VGG-13) with each pair replaced by
one 5x5 had 7% higher top-1 error on ImageNet. Arms: VGG-13 and VGG-16 (BatchNorm, global-pool
linear classifier, cnn_flax.models.vgg) against the same nets with each stack replaced by one
convolution of the same receptive field (VGG-13's pairs become 5x5, VGG-16's triples 7x7).

CPU design (issue 18): the digits are 8x8, so they are read at their native 8 px. The 32-px nets'
five 2x2 pools would shrink 8 px to nothing, so every arm keeps the first three stages (64, 128,
256 channels on 8x8, 4x4 and 2x2 maps: the last two stages of the 32-px nets run on 2x2 and 1x1
maps anyway, where most taps of a large kernel read padding). Only the VGG-13 pair (the paper's
own experiment) runs at CPU scale; the VGG-16 pair's 7x7 would act on a 2x2 map. Each arm at its
best learning rate on a held-out fifth of the training split, at equal training compute (steps
scaled by MACs), trained on a tenth of the training digits so that accuracy is not saturated.

Full scale (``--scale=full``): CIFAR-10 at 32 px with the registered 32-px nets (all five stages,
all four arms), the CIFAR-10 recipe of He et al. 2016 with VGG's weight decay 5e-4 (the
variants' own recipe), 64k iterations of batch 128, 5 seeds, each arm at the best of 0.5x, 1x and
2x its rate.
"""

from cnn_flax.configs import recipes
from cnn_flax.models.vgg import VGG13, VGG16, single_kernel_stages
from experiments.study import FullScale, Study, Variant, digits_config


def _spec(stages) -> tuple[tuple[int, int, int], ...]:
    """A stage spec as plain tuples, as a config stores it (``model_overrides.stages``)."""
    return tuple((s.features, s.num_convs, s.kernel_size) for s in stages)


# The first three stages: 8 -> 4 -> 2 px maps on the native 8-px digits.
_CPU_STAGES = 3
_ARMS = (
    ("VGG-13: 2 x 3x3", "vgg13_bn_cifar", VGG13, "VGG-13"),
    ("VGG-13: 1 x 5x5", "vgg13_bn_cifar_5x5", single_kernel_stages(VGG13), "VGG-13"),
    ("VGG-16: 3 x 3x3", "vgg16_bn_cifar", VGG16, "VGG-16"),
    ("VGG-16: 1 x 7x7", "vgg16_bn_cifar_5x5_7x7", single_kernel_stages(VGG16), "VGG-16"),
)
CPU_STEPS = 80
# 144 of the 1,437 training digits (the first tenth): the whole split saturates near 99%.
CPU_TRAIN_PERCENT = 10

STUDY = Study(
    name="vgg_kernels",
    question="Stacked 3x3 convolutions vs a single kernel with the same receptive field",
    base_config=lambda **kw: digits_config(
        **kw, default_image_size=8, train_percent=CPU_TRAIN_PERCENT
    ),
    variants=tuple(
        Variant(
            label,
            {"model": model, "model_overrides.stages": _spec(stages[:_CPU_STAGES])},
            group=group,
        )
        for label, model, stages, group in _ARMS
    ),
    default_steps=CPU_STEPS,
    full=FullScale(
        dataset="cifar10",
        image_size=32,
        train_images=50_000,
        num_classes=10,
        epochs=64_000 * 128 / 50_000,  # 64k iterations of batch 128
        batch_size=128,
        seeds=(0, 1, 2, 3, 4),
        basis="He et al. 2016 sec. 4.2 CIFAR-10 regime with VGG's weight decay 5e-4 "
        "(Simonyan and Zisserman 2015 trained on ImageNet, sec. 3.1)",
        changes={
            **{
                k: v
                for k, v in recipes.CIFAR10_RESNET.items()
                if k.startswith(("optimizer.", "schedule.", "data.")) and k != "data.name"
            },
            "optimizer.weight_decay": 5e-4,
            "schedule.warmup_epochs": 0.0,
        },
        # The registered 32-px nets, all five stages.
        arm_changes={
            label: {"model_overrides.stages": _spec(stages)} for label, _, stages, _ in _ARMS
        },
        lr_sweep=("x0.5", "x1", "x2"),
    ),
)
