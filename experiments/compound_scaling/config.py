"""Compound scaling: at a matched budget, is scaling width, depth and resolution together better
than scaling one of them?

Tan and Le 2019 ("EfficientNet", sec. 3.3 and fig. 3): FLOPs grow as d * w^2 * r^2; doubling
them by depth alone (d=2), width alone (w=1.4) or resolution alone (r=1.4) gains less than the
compound coefficients of B1 (d=1.2, w=1.1, r=1.15, phi=1). Baseline: EfficientNet-B0's blocks;
each arm changes one scaling knob (or the three together for the compound arm), and the measured
MACs of every arm are in the results table.

CPU design (issue 18): the four scaled arms (``--variants=4,1,2,3``, compound first, so each
single-dimension arm's effect is against it) at equal training compute (``--equal-compute``:
steps scaled by MACs, the paper's matched-FLOPs comparison), each at its best learning rate on a
held-out fifth of the training split, on a tenth of the training digits (144 images; all of
them saturate near 99%). The base is 16 px, twice the digits' native 8: B0 downsamples 32x, so at
8 px its last five stages would see 1x1 maps and the resolution arm (11 px) would cost the same
as the baseline. What the CPU scale cannot read: resolution adds no information to the 8x8
digits, so the resolution arm (22 px) and the compound arm's share of it (18 px) measure only
what larger maps do to the same information, not what the paper's resolution buys.

Full scale (``--scale=full``): Imagenette at B0's 224 px (the resolution arm at 314 px, the
compound at 258 px), all five arms, the 90-epoch SGD cosine recipe, 5 seeds, each arm at the
best of 0.5x, 1x and 2x its rate; add ``--equal-compute --variants=4,1,2,3`` for matched FLOPs.
"""

from experiments.study import (
    Study,
    Variant,
    digits_config,
    imagenette_full,
)

_BASE = 16
_B0 = {"model": "efficientnet_b0"}
CPU_STEPS = 80
CPU_TRAIN_PERCENT = 10

STUDY = Study(
    name="compound_scaling",
    question="Width vs depth vs resolution vs compound scaling of a B0-like net (~2x MACs)",
    base_config=lambda **kw: digits_config(
        **kw, default_image_size=_BASE, train_percent=CPU_TRAIN_PERCENT
    ),
    variants=(
        Variant("B0 baseline", dict(_B0)),
        Variant("depth x2", {**_B0, "model_overrides.depth_mult": 2.0}),
        Variant("width x1.4", {**_B0, "model_overrides.width_mult": 1.4}),
        Variant("resolution x1.4", {**_B0, "data.image_scale": 1.4}),
        Variant(
            "compound (1.2, 1.1, 1.15)",
            {
                **_B0,
                "model_overrides.depth_mult": 1.2,
                "model_overrides.width_mult": 1.1,
                "data.image_scale": 1.15,
            },
        ),
    ),
    default_steps=CPU_STEPS,
    full=imagenette_full(
        "Tan and Le 2019 fig. 3 and 8 (ImageNet, B0 at 224 px) on Imagenette, with the "
        "90-epoch SGD cosine recipe instead of the paper's 350-epoch RMSprop"
    ),
)
