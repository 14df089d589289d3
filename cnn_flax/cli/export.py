"""Export a model for deployment: ``python -m cnn_flax.export``.

    python -m cnn_flax.export --checkpoint=DIR --format=saved_model --out=DIR
    python -m cnn_flax.export --model=efficientnet_lite0 --weights=FILE_OR_URL_OR_NAME \\
        --format=tflite --out=lite0.tflite [--with-preprocessing] [--float16]
    python -m cnn_flax.export --checkpoint=DIR --format=tflite --out=int8.tflite \\
        --quantize=int8 --calibration=folder:PHOTOS

Exit status: 0 written and checked; 1 the artifact disagreed with JAX (nothing written);
2 a usage error (one line on stderr, before any work).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cnn_flax.errors import one_line
from cnn_flax.export.core import ExportCheckError, Request, UsageError, export
from cnn_flax.export.formats import FORMATS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_flax.export",
        description="Export a cnn_flax model (eval mode, fixed batch) to SavedModel, TFLite or "
        "ONNX; the artifact is run on sample images and kept only if its logits match JAX's.",
    )
    parser.add_argument("--checkpoint", metavar="DIR", help="variables checkpoint or workdir")
    parser.add_argument("--model", help="model name, with --weights")
    parser.add_argument("--weights", metavar="SOURCE", help="weights file, URL or published name")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, metavar="PATH", help="artifact path (new)")
    parser.add_argument("--batch-size", type=int, default=1, help="fixed batch size (default 1)")
    parser.add_argument(
        "--with-preprocessing",
        action="store_true",
        help="take uint8 NHWC pixels at the model's resolution and normalise inside",
    )
    parser.add_argument("--quantize", choices=("int8",), help="TFLite post-training int8")
    parser.add_argument("--calibration", metavar="folder:PATH", help="photos for --quantize")
    parser.add_argument("--float16", action="store_true", help="TFLite with float16 weights")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=0.9,
        help="int8: least top-1 agreement with the float model on held-out photos (default 0.9)",
    )
    args = parser.parse_args(argv)
    request = Request(
        format=args.format,
        out=args.out,
        checkpoint=args.checkpoint,
        model=args.model,
        weights=args.weights,
        batch_size=args.batch_size,
        with_preprocessing=args.with_preprocessing,
        quantize=args.quantize,
        calibration=args.calibration,
        float16=args.float16,
        min_agreement=args.min_agreement,
    )
    try:
        export(request)
    except UsageError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except ExportCheckError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
