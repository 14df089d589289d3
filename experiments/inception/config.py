"""Inception modules: what do the 1x1 reductions and the auxiliary classifiers buy?

Szegedy et al. 2015 ("Going Deeper with Convolutions", fig. 2 and sec. 5): the naive module
(parallel 1x1/3x3/5x5 convolutions and a pool, concatenated) blows up width and cost stage after
stage; 1x1 reductions in front of the 3x3/5x5 convolutions keep it in budget. The two auxiliary
classifiers (loss weight 0.3) were meant to help gradients reach the early layers. Arms: GoogLeNet
with reductions (baseline, no aux heads); the naive module (changes only the module); and the aux
heads switched on (``aux_logits``, with the paper's loss weight 0.3). At 32 px on the small-scale
data.
"""

from experiments.study import Study, Variant, digits_config

_NO_AUX = {"model_overrides.aux_logits": False}

STUDY = Study(
    name="inception",
    question="Naive vs 1x1-reduced Inception modules, and auxiliary classifiers on vs off",
    base_config=lambda **kw: digits_config(**kw, default_image_size=32),
    variants=(
        Variant("reduced, no aux", {"model": "googlenet", **_NO_AUX}),
        Variant("naive, no aux", {"model": "googlenet_naive", **_NO_AUX}),
        Variant(
            "reduced, aux 0.3",
            {"model": "googlenet", "model_overrides.aux_logits": True, "aux_loss_weight": 0.3},
        ),
    ),
    default_steps=150,
)
