"""cnn_flax: the classic convolutional networks in JAX/Flax, verified against torchvision.

Importing this package is cheap: it pulls in jax and flax, never TensorFlow or torch.
"""

import os


def _quiet_tensorflow_native_logs() -> None:
    """Keeps TensorFlow's C++ start-up lines off every command's output, unless the user chose.

    The data pipelines import TensorFlow, whose native libraries log through absl before anyone
    calls ``absl::InitializeLog()``: each of its two libraries prints ``WARNING: All log messages
    before absl::InitializeLog() is called are written to STDERR`` and an ``I0000 ... port.cc``
    line saying oneDNN custom operations are on, and one prints the CPU-instructions note. None
    of it is about the user's run. ``TF_CPP_MIN_LOG_LEVEL=1`` hides TensorFlow's INFO lines (its
    warnings and errors still print), but the oneDNN line goes through absl's own logging, which
    reads no environment variable: only ``TF_ENABLE_ONEDNN_OPTS=0`` stops it. That switch changes
    nothing here (tf.data decodes, crops and resizes images; the oneDNN kernels are TensorFlow's
    matrix products and convolutions, which cnn_flax runs in JAX).

    Every entry point (``python -m cnn_flax.<command>``, the ``cnn-flax-*`` scripts) imports this
    package before any TensorFlow import, so this is the one place. ``setdefault``: a value the
    user exported (``TF_CPP_MIN_LOG_LEVEL=0`` to see everything, ``TF_ENABLE_ONEDNN_OPTS=1``)
    is kept. It has no effect where TensorFlow was imported before cnn_flax.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


_quiet_tensorflow_native_logs()

from cnn_flax.models import create_model, list_models, model_info  # noqa: E402

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "model_info"]
