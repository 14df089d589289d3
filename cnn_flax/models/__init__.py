"""The model zoo: every family registers its named variants on import.

>>> from cnn_flax.models import create_model, list_models
>>> model = create_model("resnet50")
"""

# Importing a family module registers its variants.
from cnn_flax.models import (  # noqa: F401  (imported for registration)
    alexnet,
    efficientnet,
    googlenet,
    mobilenet,
    mobilenet_v3,
    resnet,
    resnet_cifar,
    vgg,
)
from cnn_flax.models.registry import ModelInfo, create_model, list_models, model_info, register

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register"]
