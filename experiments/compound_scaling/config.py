"""Compound scaling: at a matched budget, is scaling width, depth and resolution together better
than scaling one of them?

Tan and Le 2019 ("EfficientNet", sec. 3.3 and fig. 3): FLOPs grow as d * w^2 * r^2; doubling
them by depth alone (d=2), width alone (w=1.4) or resolution alone (r=1.4) gains less than the
compound coefficients of B1 (d=1.2, w=1.1, r=1.15, phi=1). Baseline: EfficientNet-B0's blocks at
48 px on the small-scale data; each arm changes one scaling knob (or the three together for the
compound arm), and the measured MACs of every arm are in the results table.

Why 48 px: the network downsamples 32x, so at a 32-px base any larger input jumps the last
stages from 1x1 to 2x2 maps and multiplies their MACs by 4 (a 37-px compound arm cost 4.4x the
baseline, not 2x). From 48 px the arms land within 1.9-2.3x of the baseline's MACs.
"""

from experiments.study import Study, Variant, digits_config

_BASE = 48
_B0 = {"model": "efficientnet_b0"}

STUDY = Study(
    name="compound_scaling",
    question="Width vs depth vs resolution vs compound scaling of a B0-like net (~2x MACs)",
    base_config=lambda **kw: digits_config(**kw, default_image_size=_BASE),
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
    default_steps=150,
)
