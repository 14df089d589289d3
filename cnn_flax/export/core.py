"""Export a trained model for deployment, and check the artifact before keeping it.

The model is exported in evaluation mode (BatchNorm on its running statistics, no dropout) as a
function of a fixed-size batch: TFLite refuses dynamic shapes, and one shape for every format
keeps the check honest. The artifact is first written under a temporary name beside ``out``, run
by its own runtime (TensorFlow, the TFLite interpreter, onnxruntime) on sample images, and
compared with JAX's logits on the same images; only an artifact within the tolerance is renamed
to ``out``. Users report the traps this guards against: BatchNorm left in train mode, shapes
TFLite refuses, converters that silently change numerics (jax #24497, flax #4327).
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time
from collections.abc import Callable

import numpy as np

from cnn_flax import weights
from cnn_flax.data.eval_transform import Preprocessing
from cnn_flax.errors import one_line
from cnn_flax.export import formats, images
from cnn_flax.models import create_model, model_info
from cnn_flax.training import checkpoint_record
from cnn_flax.training.checkpoint import CheckpointError, load_variables

# Max |exported - JAX| logit error allowed, as a fraction of the largest |logit| (at least 1):
# float32 arithmetic in another runtime differs by rounding only (1e-6 to 1e-5 measured);
# float16 weights lose about 3 decimal digits.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
SAMPLE_IMAGES = 4  # noise images for the check when no photos are given


class UsageError(Exception):
    """A mistake in the command's inputs; the message says what is wrong and how to fix it."""


class ExportCheckError(Exception):
    """The artifact's outputs disagree with JAX's; it was not kept."""


@dataclasses.dataclass(frozen=True)
class Request:
    """What to export and how; :func:`check_request` validates it before any work.

    Attributes:
      format: ``"saved_model"``, ``"tflite"`` or ``"onnx"``.
      out: the artifact's path (a folder for a SavedModel, a file otherwise); must not exist.
      checkpoint: a variables checkpoint or training workdir; or else
      model / weights: a registry name and a source for :func:`cnn_flax.weights.load`.
      batch_size: the artifact's fixed batch size.
      with_preprocessing: take uint8 ``[N, H, W, 3]`` pixels and normalise inside.
      quantize: ``"int8"`` (TFLite) or ``None``.
      calibration: ``"folder:PATH"`` of photos for int8 calibration and its check.
      float16: TFLite with float16 weights.
      min_agreement: int8's least top-1 agreement with the float model on held-out photos.
    """

    format: str
    out: str
    checkpoint: str | None = None
    model: str | None = None
    weights: str | None = None
    batch_size: int = 1
    with_preprocessing: bool = False
    quantize: str | None = None
    calibration: str | None = None
    float16: bool = False
    min_agreement: float = 0.9


@dataclasses.dataclass(frozen=True)
class Report:
    """What was written and how well it agrees with JAX.

    Attributes:
      path: the artifact.
      size_bytes: its size (a SavedModel: the folder's files together).
      max_abs_error: max |exported - JAX| logit on the sample images.
      tolerance: the allowed error (``None`` for int8, judged by agreement).
      top1_agreement: fraction of sample images whose top-1 class is JAX's.
      images: how many sample images were compared.
    """

    path: pathlib.Path
    size_bytes: int
    max_abs_error: float
    tolerance: float | None
    top1_agreement: float
    images: int


def check_request(request: Request) -> None:
    """Refuses what a format cannot express, in one line, before anything is loaded.

    Raises:
      UsageError: naming the option and the fix.
    """
    r = request
    if r.format not in formats.FORMATS:
        raise UsageError(f"--format={r.format} is not one of {', '.join(formats.FORMATS)}.")
    if (r.checkpoint is None) == (r.model is None):
        raise UsageError("give either --checkpoint=DIR or --model=NAME --weights=SOURCE.")
    if r.model is not None and r.weights is None:
        raise UsageError(
            f"--model={r.model} needs --weights=SOURCE (a file, URL or published name)."
        )
    if r.checkpoint is not None and r.weights is not None:
        raise UsageError("--weights goes with --model, not --checkpoint; give one source.")
    if r.batch_size < 1:
        raise UsageError(
            f"--batch-size={r.batch_size}: exports have a fixed batch size of at least 1 "
            "(TFLite cannot express a dynamic one)."
        )
    if r.quantize not in (None, "int8"):
        raise UsageError(f"--quantize={r.quantize} is not supported; the one scheme is int8.")
    if r.quantize and r.format != "tflite":
        raise UsageError(
            f"--quantize=int8 is TFLite post-training quantisation; --format={r.format} cannot "
            "express it. Use --format=tflite."
        )
    if r.quantize and r.calibration is None:
        raise UsageError(
            "--quantize=int8 needs --calibration=folder:PATH, photos to calibrate the int8 "
            "ranges on (a few hundred from the training set)."
        )
    if r.calibration is not None and not r.quantize:
        raise UsageError("--calibration is for --quantize=int8; drop it or add --quantize=int8.")
    if r.float16 and r.format != "tflite":
        raise UsageError(
            f"--float16 is a TFLite weight format; --format={r.format} exports float32. "
            "Use --format=tflite."
        )
    if r.float16 and r.quantize:
        raise UsageError("--float16 and --quantize=int8 are two weight formats; choose one.")
    if not 0.0 <= r.min_agreement <= 1.0:
        raise UsageError(f"--min-agreement={r.min_agreement} is not a fraction in [0, 1].")
    if r.calibration is not None:
        calibration_paths(r.calibration)
    if pathlib.Path(r.out).expanduser().exists():
        raise UsageError(f"--out {r.out} already exists; choose a new path or delete it first.")
    missing = formats.missing_converter(r.format)
    if missing:
        raise UsageError(f"--format={r.format} needs {missing}: install {formats.EXTRA}.")


def calibration_paths(spec: str) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """``(calibration, held_out)`` image paths of ``folder:PATH``.

    Raises:
      UsageError: a spec other than ``folder:PATH``, a missing folder, or fewer than 2 images.
    """
    kind, sep, where = spec.partition(":")
    if kind != "folder" or not sep or not where:
        raise UsageError(f"--calibration={spec} is not folder:PATH, e.g. folder:/data/calib.")
    folder = pathlib.Path(where).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--calibration folder {folder} does not exist.")
    paths = images.folder_images(folder)
    if len(paths) < 2:
        raise UsageError(
            f"--calibration folder {folder} has {len(paths)} images; int8 needs at least 2 "
            f"({', '.join(images.IMAGE_SUFFIXES)}): some to calibrate on, one held out."
        )
    return images.split_held_out(paths)


@dataclasses.dataclass(frozen=True)
class Source:
    """A model ready to export: registry name, overrides, variables and evaluation transform."""

    name: str
    overrides: dict
    variables: dict
    preprocessing: Preprocessing


def load_source(request: Request) -> Source:
    """The model and weights of ``--checkpoint`` (as ``predict`` reads them) or ``--model
    --weights`` (through :func:`cnn_flax.weights.load`).

    Raises:
      UsageError: unknown model, unreadable checkpoint or weights.
    """
    if request.checkpoint is not None:
        checkpoint = pathlib.Path(request.checkpoint).expanduser()
        if not checkpoint.exists():
            raise UsageError(f"--checkpoint {checkpoint} does not exist.")
        try:
            inputs = checkpoint_record.inputs(checkpoint)
            variables = load_variables(checkpoint)
        except (CheckpointError, ValueError) as err:
            raise UsageError(one_line(err)) from None
        return Source(inputs.model, inputs.overrides, variables, inputs.preprocessing)

    try:
        model_info(request.model)
    except ValueError as err:
        raise UsageError(one_line(err)) from None
    try:
        variables, provenance = weights.load(request.model, request.weights)
    except (KeyError, ValueError, TypeError, OSError) as err:  # WeightsError is a ValueError
        raise UsageError(one_line(err.args[0] if err.args else err)) from None
    if provenance.preprocessing:
        preprocessing = Preprocessing.from_json(provenance.preprocessing)
    else:
        preprocessing = Preprocessing.for_model(request.model)
    return Source(request.model, dict(provenance.overrides), variables, preprocessing)


def inference_fn(source: Source, *, with_preprocessing: bool) -> Callable:
    """``fn(variables, images) -> float32 logits`` in evaluation mode; with preprocessing the
    images are uint8 pixels normalised inside with the model's own mean and std."""
    import jax.numpy as jnp

    num_classes = int(np.shape(source.variables["params"]["head"]["kernel"])[-1])
    # XLA's own convolutions: the exported graph should hold plain convolution ops for the target
    # runtime to map to its kernels, not the XLA:CPU training implementations (custom gradients,
    # shifted slices) a model picks by default on this backend; the parameters are the same.
    overrides = {**source.overrides, "conv": "xla"}
    model = create_model(source.name, num_classes=num_classes, **overrides)
    mean = np.asarray(source.preprocessing.mean, np.float32) * np.float32(255)
    std = np.asarray(source.preprocessing.std, np.float32) * np.float32(255)

    def fn(variables, x):
        if with_preprocessing:
            x = (x.astype(jnp.float32) - mean) / std
        return model.apply(variables, x, train=False).astype(jnp.float32)

    return fn


def export(request: Request, *, log: Callable[[str], None] = print) -> Report:
    """Writes ``request.out`` and checks it against JAX; see the module docstring.

    Raises:
      UsageError: bad options or inputs, before any conversion.
      ExportCheckError: the artifact disagrees with JAX (nothing is left at ``out``).
    """
    import jax

    check_request(request)
    start = time.perf_counter()
    out = pathlib.Path(request.out).expanduser().resolve()
    source = load_source(request)
    pre = source.preprocessing
    size, batch = pre.crop, request.batch_size
    log(
        f"Exporting {source.name} ({size}x{size}, batch {batch}, "
        f"{'uint8 pixels, normalised inside' if request.with_preprocessing else 'float32 input'})"
        f" to {request.format}{_variant(request)}"
    )

    # Sample pixels: held-out photos with int8, seeded noise otherwise.
    representative = None
    if request.quantize:
        calibrate, held_out = calibration_paths(request.calibration)
        pixels = images.load_uint8(held_out, pre)
        calib_pixels = images.load_uint8(calibrate, pre)
        representative = [_as_input(b, pre, request) for b in images.batches(calib_pixels, batch)]
        log(f"Calibrating on {len(calibrate)} images, checking on {len(held_out)} held out")
    else:
        pixels = images.noise_uint8(max(SAMPLE_IMAGES, batch), size)
    samples = [_as_input(b, pre, request) for b in images.batches(pixels, batch)]
    count = len(pixels)

    fn = inference_fn(source, with_preprocessing=request.with_preprocessing)
    variables = {k: source.variables[k] for k in ("params", "batch_stats") if k in source.variables}
    variables = jax.tree.map(lambda a: np.asarray(a, np.float32), variables)
    spec = jax.ShapeDtypeStruct(samples[0].shape, samples[0].dtype)
    jitted = jax.jit(fn)
    expected = np.concatenate([np.asarray(jitted(variables, b)) for b in samples])[:count]

    tmp = out.with_name(f".{out.name}.partial")
    _remove(tmp)
    try:
        if request.format == "saved_model":
            formats.write_saved_model(fn, variables, spec, tmp)
            got = formats.run_saved_model(tmp, samples)
        elif request.format == "tflite":
            formats.write_tflite(
                fn,
                variables,
                spec,
                tmp,
                float16=request.float16,
                representative=representative,
            )
            got = formats.run_tflite(tmp, samples)
        else:
            formats.write_onnx(lambda x: fn(variables, x), spec, tmp, name=source.name)
            got = formats.run_onnx(tmp, samples)
        got = got[:count]
        report = _compare(request, tmp, got, expected)
        log(_summary(report, request))
        if not _passes(report, request):
            raise ExportCheckError(
                f"{request.format} export of {source.name} disagrees with JAX "
                f"({_summary(report, request)}); not written to {out}."
            )
        tmp.rename(out)
    finally:
        _remove(tmp)
    log(f"Wrote {out} ({_megabytes(report.size_bytes)}) in {time.perf_counter() - start:.1f} s")
    return dataclasses.replace(report, path=out)


def _as_input(pixels: np.ndarray, pre: Preprocessing, request: Request) -> np.ndarray:
    return pixels if request.with_preprocessing else images.normalise(pixels, pre)


def _variant(request: Request) -> str:
    if request.quantize:
        return " (int8)"
    return " (float16 weights)" if request.float16 else ""


def _compare(request: Request, path: pathlib.Path, got: np.ndarray, expected: np.ndarray) -> Report:
    error = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if not np.isfinite(got).all():
        error = float("inf")
    scale = max(1.0, float(np.max(np.abs(expected))))
    tolerance = None if request.quantize else TOLERANCE[_precision(request)] * scale
    agreement = float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1)))
    return Report(path, _size(path), error, tolerance, agreement, len(expected))


def _passes(report: Report, request: Request) -> bool:
    if request.quantize:
        return report.top1_agreement >= request.min_agreement
    return report.max_abs_error <= report.tolerance


def _summary(report: Report, request: Request) -> str:
    head = f"Checked on {report.images} images: max |logit - JAX| {report.max_abs_error:.3g}"
    if request.quantize:
        return (
            f"{head}; top-1 agreement with the float model {report.top1_agreement:.1%} on "
            f"held-out images (needs {request.min_agreement:.0%}); "
            f"{_megabytes(report.size_bytes)}"
        )
    return f"{head} (tolerance {report.tolerance:.3g}); top-1 agreement {report.top1_agreement:.0%}"


def _precision(request: Request) -> str:
    return "float16" if request.float16 else "float32"


def _size(path: pathlib.Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def _remove(path: pathlib.Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
