"""Depthwise-separable convolutions: how much accuracy do they cost for their savings?

Howard et al. 2017 ("MobileNets", table 4): replacing each full 3x3 convolution by a depthwise
3x3 plus a pointwise 1x1 cuts mult-adds and parameters about 8-9x for 1.1% ImageNet top-1; the
width multiplier (table 6) then trades accuracy for cost smoothly. Arms: MobileNet v1 against its
full-convolution twin (changes only ``separable``), at alpha = 1 and alpha = 0.25, and the width
multiplier alpha (``width_mult``, the paper's alpha).

CPU design (issue 18): the 8x8 digits at their native 8 px, a tenth of the training split (144
images; all of it saturates near 99%). MobileNet's stem and first four strides would take 8 px to
1x1 by the fourth block, where a depthwise 3x3 reads only its centre tap and the two arms differ
in nothing the paper changes; so the CPU layout keeps the 13 blocks and their widths but strides
only at blocks 6 and 12 (:data:`CPU_BLOCKS`): blocks 6-13 see the same 2x2 and 1x1 maps as at
32 px, blocks 1-5 see 4x4. The factorisation is compared at alpha = 0.25, where the full twin
costs 0.33 s per step on this CPU (alpha = 1: 12 s, out of reach); the arms train for the same
steps, as in the paper (its claim is the accuracy each net reaches under one schedule, next to
its cost), each at its best learning rate on a held-out fifth of the training split.

Full scale (``--scale=full``): Imagenette at 224 px (the paper's ImageNet layout and resolution,
ten classes), the paper's own block layout, all six arms, the 90-epoch SGD cosine recipe, 5 seeds,
each arm at the best of 0.5x, 1x and 2x its rate.
"""

from cnn_flax.models.mobilenet import V1_BLOCKS
from experiments.study import (
    Study,
    Variant,
    digits_config,
    imagenette_full,
)

# MobileNet v1's 13 blocks (output channels, stride) with the strides of blocks 2 and 4 removed:
# the 8-px digits are 4x4 after the stem, 2x2 after block 6 and 1x1 after block 12.
CPU_BLOCKS = (
    (64, 1), (128, 1), (128, 1), (256, 1), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
CPU_STEPS = 80
CPU_TRAIN_PERCENT = 10

_V1 = {"model": "mobilenet_v1", "model_overrides.blocks": CPU_BLOCKS}
_FULL = {"model_overrides.separable": False}

STUDY = Study(
    name="separable",
    question="Depthwise-separable vs full convolutions, and the width multiplier",
    base_config=lambda **kw: digits_config(
        **kw, default_image_size=8, train_percent=CPU_TRAIN_PERCENT
    ),
    variants=(
        Variant("full conv a=1.0", {**_V1, **_FULL}),
        Variant("separable a=1.0", dict(_V1)),
        Variant("separable a=0.75", {**_V1, "model_overrides.width_mult": 0.75}),
        Variant("separable a=0.5", {**_V1, "model_overrides.width_mult": 0.5}),
        Variant("separable a=0.25", {**_V1, "model_overrides.width_mult": 0.25}),
        Variant("full conv a=0.25", {**_V1, **_FULL, "model_overrides.width_mult": 0.25}),
    ),
    default_steps=CPU_STEPS,
    # The paper's block layout (strides at blocks 2, 4, 6 and 12) and weight decay 4e-5.
    full=imagenette_full(
        "Howard et al. 2017 tables 4 and 6 (ImageNet, 224 px) on Imagenette, with the "
        "90-epoch SGD cosine recipe instead of the paper's asynchronous RMSprop",
        **{"model_overrides.blocks": V1_BLOCKS, "optimizer.weight_decay": 4e-5},
    ),
)
