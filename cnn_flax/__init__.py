"""cnn_flax: the classic convolutional networks in JAX/Flax, verified against torchvision.

Importing this package is cheap: it pulls in jax and flax, never TensorFlow or torch.
"""

from cnn_flax.models import create_model, list_models, model_info

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "model_info"]
