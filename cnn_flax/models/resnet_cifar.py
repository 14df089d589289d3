"""The CIFAR-10 ResNets of He et al. 2016 ("Deep Residual Learning for Image Recognition",
sec. 4.2) and their plain twins.

A 3x3 convolution with 16 filters on the 32x32 image, then three stages of ``n`` basic blocks
(two 3x3 convolutions each) with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps, global
average pooling and a Dense classifier: ``6n + 2`` weighted layers, n = 3, 5, 7, 9, 18 for
ResNet-20/32/44/56/110. Shortcuts are the paper's option A throughout: identity, and where a
stage halves the resolution and doubles the width, every second pixel with zero channels
appended, so they add no parameters. Zero channels go after the identity channels, as in the
authors' Torch code (fb.resnet.torch, shortcut type A); the paper does not say where they go
and their position does not change the function class.

These models have no torchvision counterpart. Pass ``num_classes=10`` for CIFAR-10 (the
registry's default is ImageNet's 1000), and ``width_mult=`` to scale the 16-32-64 filters. The
parameter counts registered are the paper's Table 6 figures; for the plain twins they are the
same figures because the paper states (sec. 4.2) that with option A "our residual models have
exactly the same depth, width, and number of parameters as the plain counterparts".
"""

from __future__ import annotations

import functools

from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import EvalTransform, Family, Recipe
from cnn_flax.models.resnet import BasicBlock, ResNet

# Depth 6n + 2 -> paper Table 6's parameter count, as printed, and 100 - its test error.
_PAPER_FIGURES = {
    20: ("0.27M", 91.25),
    32: ("0.46M", 92.49),
    44: ("0.66M", 92.83),
    56: ("0.85M", 93.03),
    110: ("1.7M", 93.57),
}
_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition, sec. 4.2 (CIFAR-10)"
# Sec. 4.2, ResNet-110: "we use 0.01 to warm up the training until the training error is below
# 80% (about 400 iterations), and then go back to 0.1": a constant 0.01 for 400 iterations of
# 128 images (0.1 x the 0.1 peak).
_WARMUP_110 = {
    "schedule.warmup_epochs": 400 * 128 / 50_000,
    "schedule.warmup_shape": "constant",
    "schedule.warmup_init_factor": 0.1,
}

cifar_resnet = functools.partial(
    ResNet, block=BasicBlock, base_width=16, stem="cifar", shortcut="zero_pad"
)
"""The CIFAR ResNet builder; ``stage_sizes=(n, n, n)`` gives depth ``6n + 2``."""

FAMILY = Family(
    name="resnet_cifar",
    reference=_PAPER,
    recipe=Recipe(
        base="cifar10_resnet",
        source=_PAPER,
        target_source="He et al. 2016 Table 6 (100 - error)",
    ),
    features=FeatureNodes(("stem", "stage*")),
)

for _depth, (_params, _top1) in _PAPER_FIGURES.items():
    _n = (_depth - 2) // 6
    for _plain in (False, True):
        FAMILY.register(
            f"{'plain' if _plain else 'resnet'}{_depth}",
            functools.partial(cifar_resnet, stage_sizes=(_n, _n, _n), skip_connections=not _plain),
            reference=f"{_PAPER}, {'plain baseline' if _plain else 'option A shortcuts'}",
            resolution=32,
            transform=EvalTransform(32, 32),
            paper_params=_params,
            recipe=FAMILY.recipe.but(
                _WARMUP_110 if _depth == 110 else {},
                # The plain twins have no table entry; Fig. 6 shows them worse the deeper they are.
                target_top1=None if _plain else _top1,
            ),
        )
