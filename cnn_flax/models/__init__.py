"""The model zoo: every family registers its named variants on import.

>>> from cnn_flax.models import create_model, list_models
>>> model = create_model("resnet50")

A family is one module of this package (see :mod:`cnn_flax.models.registry`); adding one means
writing that module and naming it in :data:`FAMILIES`.
"""

import importlib

from cnn_flax.models.registry import (
    EvalTransform,
    Family,
    ModelInfo,
    Recipe,
    Weights,
    create_model,
    list_families,
    list_models,
    model_info,
)

# The family modules, in the order of the model table.
FAMILIES = (
    "alexnet", "vgg", "googlenet", "resnet", "resnet_cifar", "mobilenet", "mobilenet_v3",
    "efficientnet", "convnext", "vit", "swin",
)  # fmt: skip

for _family in FAMILIES:
    importlib.import_module(f"cnn_flax.models.{_family}")

__all__ = [
    "FAMILIES",
    "EvalTransform",
    "Family",
    "ModelInfo",
    "Recipe",
    "Weights",
    "create_model",
    "list_families",
    "list_models",
    "model_info",
]
