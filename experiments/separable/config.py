"""Depthwise-separable convolutions: how much accuracy do they cost for their savings?

Howard et al. 2017 ("MobileNets", table 4): replacing each full 3x3 convolution by a depthwise
3x3 plus a pointwise 1x1 cuts mult-adds and parameters about 8-9x for 1.1% ImageNet top-1; the
width multiplier (table 6) then trades accuracy for cost smoothly. Arms: MobileNet v1 (baseline)
against its full-convolution twin (changes only ``separable``), and the width multiplier alpha
(``width_mult``, the paper's alpha). At 32 px on the small-scale data.
"""

from experiments.study import Study, Variant, digits_config

STUDY = Study(
    name="separable",
    question="Depthwise-separable vs full convolutions, and the width multiplier",
    base_config=lambda **kw: digits_config(**kw, default_image_size=32),
    variants=(
        Variant("full conv", {"model": "mobilenet_v1", "model_overrides.separable": False}),
        Variant("separable a=1.0", {"model": "mobilenet_v1"}),
        Variant("separable a=0.75", {"model": "mobilenet_v1", "model_overrides.width_mult": 0.75}),
        Variant("separable a=0.5", {"model": "mobilenet_v1", "model_overrides.width_mult": 0.5}),
        Variant("separable a=0.25", {"model": "mobilenet_v1", "model_overrides.width_mult": 0.25}),
    ),
    default_steps=150,
)
