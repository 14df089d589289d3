"""Inception modules: what do the 1x1 reductions and the auxiliary classifiers buy?

Szegedy et al. 2015 ("Going Deeper with Convolutions", fig. 2 and sec. 5): the naive module
(parallel 1x1/3x3/5x5 convolutions and a pool, concatenated) blows up width and cost stage after
stage; 1x1 reductions in front of the 3x3/5x5 convolutions keep it in budget. The two auxiliary
classifiers (loss weight 0.3) were meant to help gradients reach the early layers; the paper
itself calls their effect minor (about 0.5% top-1). Arms: GoogLeNet with reductions (baseline, no
aux heads); the naive module (changes only the module); and the aux heads switched on
(``aux_logits``, with the paper's loss weight 0.3).

CPU design (issue 18): the auxiliary heads only (arms 0 and 2, ``--variants=0,2``): the naive
arm's claim is its cost, which the counts give exactly, and its 184 MMACs per 32-px image put a
fair accuracy comparison out of this CPU's reach. The digits are read at 16 px, twice their
native 8 (no new information): GoogLeNet's stem divides by 8 before the first module, so at 8 px
all nine modules would see 1x1 maps; at 16 px the first stage sees 2x2. A tenth of the training
split (144 images; all of it saturates near 99%), each arm at its best learning rate on a
held-out fifth of the training split. Equal steps are equal compute up to the heads' own cost
in training (they add no inference MACs).

Full scale (``--scale=full``): Imagenette at 224 px (the paper's resolution), all three arms, the
90-epoch SGD cosine recipe, 5 seeds, each arm at the best of 0.5x, 1x and 2x its rate.
"""

from experiments.study import (
    Study,
    Variant,
    digits_config,
    imagenette_full,
)

_NO_AUX = {"model_overrides.aux_logits": False}
CPU_STEPS = 80
CPU_TRAIN_PERCENT = 10

STUDY = Study(
    name="inception",
    question="Naive vs 1x1-reduced Inception modules, and auxiliary classifiers on vs off",
    base_config=lambda **kw: digits_config(
        **kw, default_image_size=16, train_percent=CPU_TRAIN_PERCENT
    ),
    variants=(
        Variant("reduced, no aux", {"model": "googlenet", **_NO_AUX}),
        Variant("naive, no aux", {"model": "googlenet_naive", **_NO_AUX}),
        Variant(
            "reduced, aux 0.3",
            {"model": "googlenet", "model_overrides.aux_logits": True, "aux_loss_weight": 0.3},
        ),
    ),
    default_steps=CPU_STEPS,
    full=imagenette_full(
        "Szegedy et al. 2015 (ImageNet, 224 px, sec. 6) on Imagenette, with the 90-epoch "
        "SGD cosine recipe instead of the paper's asynchronous SGD with 4% decay every 8 epochs"
    ),
)
