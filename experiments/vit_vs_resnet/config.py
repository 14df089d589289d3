"""ViT vs ResNet at a matched cost on small data: does the Transformer's lack of convolutional
priors cost it accuracy when images are few?

Dosovitskiy et al. 2021 (sec. 4.2 and fig. 3): on ImageNet-1k alone ViT-B falls behind BiT
ResNets of similar cost and overtakes them only with 14M-300M pre-training images, because it
lacks the locality and translation equivariance that convolutions build in. Here the data are
tiny (1,437 digits at 32 px). Arms, crossed: architecture (a CIFAR ResNet-32, 0.46M parameters,
69M MACs, against a 6-layer ViT with 4-pixel patches, width 128, 0.81M parameters, 58M MACs) x
optimiser (the baseline's SGD with Nesterov momentum, against AdamW with warm-up, the ViT
papers' choice), so each comparison changes one thing.
"""

from experiments.study import Study, Variant, digits_config

_SIZE = 32
_RESNET = {"model": "resnet32"}
_VIT = {
    "model": "vit_b_16",
    "model_overrides.patch_size": 4,
    "model_overrides.num_layers": 6,
    "model_overrides.hidden_dim": 128,
    "model_overrides.num_heads": 4,
    "model_overrides.mlp_dim": 256,
    "model_overrides.image_size": _SIZE,
}
# AdamW as ViTs are trained (Dosovitskiy et al. 2021, Table 3: Adam, weight decay, linear warm-up
# then decay), scaled to this budget: peak 1e-3 for batch 32 (base 8e-3 per 256 images).
_ADAMW = {
    "optimizer.name": "adamw",
    "optimizer.lr": 8e-3,
    "optimizer.weight_decay": 0.05,
    "optimizer.weight_decay_mask": "kernels",
}

STUDY = Study(
    name="vit_vs_resnet",
    question="ViT vs a ResNet of similar cost, trained the same budget on small data",
    base_config=lambda **kw: digits_config(**kw, default_image_size=_SIZE),
    variants=(
        Variant("ResNet-32, SGD", dict(_RESNET), group="SGD (baseline recipe)"),
        Variant("ViT 6x128/4, SGD", dict(_VIT), group="SGD (baseline recipe)"),
        Variant("ResNet-32, AdamW", {**_RESNET, **_ADAMW}, group="AdamW"),
        Variant("ViT 6x128/4, AdamW", {**_VIT, **_ADAMW}, group="AdamW"),
    ),
    default_steps=400,
)
