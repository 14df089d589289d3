"""Export a model to SavedModel, TFLite or ONNX, checked against JAX when written.

    python -m cnn_flax.export --checkpoint=DIR --format=tflite --out=model.tflite
    python -m cnn_flax.export --model=efficientnet_lite0 --weights=FILE --format=onnx --out=m.onnx

The library call is :func:`export` with a :class:`Request`; the command
(:mod:`cnn_flax.cli.export`) only parses flags. TensorFlow, jax2onnx and onnxruntime are imported
when a format needs them, so ``import cnn_flax.export`` stays light.
"""

from cnn_flax.export.core import (
    ExportCheckError,
    Report,
    Request,
    UsageError,
    check_request,
    export,
)
from cnn_flax.export.formats import FORMATS

__all__ = [
    "FORMATS",
    "ExportCheckError",
    "Report",
    "Request",
    "UsageError",
    "check_request",
    "export",
]
