"""`python -m cnn_flax.export`: SavedModel, TFLite (float32, float16, int8) and ONNX exports of
a small MobileNet and a ResNet-18, each run by its own runtime and compared with JAX here.

The checkpoints are random, with every parameter and BatchNorm statistic moved away from its
initial value (a zero-initialised head would make every logit 0 and any export "agree"). Sizes:
32 px, ResNet-18 with 10 classes, MobileNetV3-Small at width 0.5. TensorFlow conversion is the
cost (about 10-20 s an export on a free core); ONNX adds jax2onnx's plugin import (about 10 s).
One model per format runs by default (ONNX takes the MobileNet, whose squeeze-excite broadcasts
broke jax2onnx's Flax-level conversion); the other model and float16 run with ``-m variants``.
"""

import pathlib

import jax
import numpy as np
import pytest

from cnn_flax.cli.export import main
from cnn_flax.data.eval_transform import Preprocessing
from cnn_flax.export import ExportCheckError, Request, UsageError, export, formats
from cnn_flax.models import create_model
from cnn_flax.models.registry import EvalTransform
from cnn_flax.training.checkpoint import load_variables, save_variables

pytest.importorskip("tensorflow")

SIZE = 32
MODELS = {"resnet18": {}, "mobilenet_v3_small": {"width_mult": 0.5}}
PRE = Preprocessing(
    EvalTransform(crop=SIZE, resize=36), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


def _random_variables(name: str, overrides: dict) -> dict:
    model = create_model(name, num_classes=10, **overrides)
    init = jax.jit(lambda key, x: model.init(key, x, train=False))  # eager init is slow
    variables = init(jax.random.key(0), np.zeros((1, SIZE, SIZE, 3), np.float32))
    rng = np.random.default_rng(1)

    def perturb(path, a):
        a = np.asarray(a, np.float32)
        noise = rng.normal(size=a.shape).astype(np.float32)
        if "var" in jax.tree_util.keystr(path):
            return np.abs(a + 0.2 * noise) + 0.5
        return a + 0.05 * noise

    return jax.tree_util.tree_map_with_path(perturb, variables)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, overrides in MODELS.items():
        meta = {
            "model": name,
            "num_classes": 10,
            "overrides": overrides,
            "preprocessing": PRE.to_json(),
        }
        out[name] = save_variables(root / name, _random_variables(name, overrides), meta=meta)
    return out


def _pixels(count: int = 3) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def _jax_logits(checkpoint: pathlib.Path, name: str, pixels: np.ndarray) -> np.ndarray:
    """JAX's eval-mode logits, computed here independently of the export code."""
    variables = load_variables(checkpoint)
    model = create_model(name, num_classes=10, **MODELS[name])
    x = (pixels / np.float32(255) - np.float32(PRE.mean)) / np.float32(PRE.std)
    return np.asarray(model.apply(variables, x.astype(np.float32), train=False))


def _run(fmt: str, path: pathlib.Path, batches: list[np.ndarray]) -> np.ndarray:
    runner = {
        "saved_model": formats.run_saved_model,
        "tflite": formats.run_tflite,
        "onnx": formats.run_onnx,
    }[fmt]
    return runner(path, batches)


def _export_and_compare(checkpoints, tmp_path, name, fmt, *, preprocessing=False, **options):
    suffix = {"saved_model": "", "tflite": ".tflite", "onnx": ".onnx"}[fmt]
    out = tmp_path / f"{name}{suffix}"
    lines = []
    report = export(
        Request(
            format=fmt,
            out=str(out),
            checkpoint=str(checkpoints[name]),
            with_preprocessing=preprocessing,
            **options,
        ),
        log=lines.append,
    )
    assert out.exists() and report.path == out.resolve()
    assert not list(tmp_path.glob(".*partial*")), "the temporary artifact was left behind"
    assert any("tolerance" in line for line in lines), lines  # the check's numbers are printed
    pixels = _pixels()
    batch = options.get("batch_size", 1)
    expected = _jax_logits(checkpoints[name], name, pixels)
    inputs = pixels if preprocessing else ((pixels / 255 - np.float32(PRE.mean)) / PRE.std)
    inputs = inputs if preprocessing else inputs.astype(np.float32)
    got = _run(fmt, out, [inputs[i : i + batch] for i in range(0, len(inputs), batch)])
    return report, np.max(np.abs(got - expected)), np.abs(expected).max()


@pytest.mark.slow
def test_saved_model_resnet18(checkpoints, tmp_path):
    report, error, scale = _export_and_compare(
        checkpoints, tmp_path, "resnet18", "saved_model", batch_size=3
    )
    assert error <= 1e-4 * max(1, scale), error
    assert report.max_abs_error <= report.tolerance


@pytest.mark.slow
def test_tflite_mobilenet_with_preprocessing(checkpoints, tmp_path):
    report, error, scale = _export_and_compare(
        checkpoints, tmp_path, "mobilenet_v3_small", "tflite", preprocessing=True
    )
    assert error <= 1e-4 * max(1, scale), error


@pytest.mark.slow
@pytest.mark.variants
def test_tflite_resnet18_float16(checkpoints, tmp_path):
    report, error, scale = _export_and_compare(
        checkpoints, tmp_path, "resnet18", "tflite", float16=True
    )
    assert error <= 2e-2 * max(1, scale), error
    params = sum(np.size(a) for a in jax.tree.leaves(load_variables(checkpoints["resnet18"])))
    assert report.size_bytes < 2.5 * params, "float16 weights take 2 bytes each"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["mobilenet_v3_small", pytest.param("resnet18", marks=pytest.mark.variants)]
)
def test_onnx(checkpoints, tmp_path, name):
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    report, error, scale = _export_and_compare(checkpoints, tmp_path, name, "onnx", batch_size=3)
    assert error <= 1e-4 * max(1, scale), error


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Ten photos: crops of scikit-image's sample photos (or seeded noise without it)."""
    Image = pytest.importorskip("PIL.Image")
    folder = tmp_path_factory.mktemp("calib")
    try:
        from skimage import data

        photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    except ImportError:
        photos = [
            np.random.default_rng(i).integers(0, 256, (300, 300, 3), np.uint8) for i in range(4)
        ]
    for i in range(10):
        photo = photos[i % len(photos)]
        top, left = 20 * i, 15 * i
        Image.fromarray(photo[top : top + 200, left : left + 200]).save(folder / f"{i}.png")
    return folder


@pytest.mark.slow
def test_tflite_int8(checkpoints, tmp_path, photo_folder):
    out = tmp_path / "int8.tflite"
    lines = []
    report = export(
        Request(
            format="tflite",
            out=str(out),
            checkpoint=str(checkpoints["resnet18"]),
            quantize="int8",
            calibration=f"folder:{photo_folder}",
            min_agreement=0.0,  # a random network's classes are near ties; agreement is printed
        ),
        log=lines.append,
    )
    assert any("held-out" in line and "agreement" in line for line in lines), lines
    assert report.images == 2  # every fifth photo of ten is held out
    params = sum(np.size(a) for a in jax.tree.leaves(load_variables(checkpoints["resnet18"])))
    assert report.size_bytes < 1.5 * params, "int8 weights take 1 byte each"
    interpreter = formats.tflite_interpreter(out)
    kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in kinds, kinds
    assert np.isfinite(report.max_abs_error)


def test_disagreeing_export_is_not_kept(checkpoints, tmp_path, monkeypatch):
    """An artifact whose logits differ from JAX's is deleted, and the command exits 1."""

    def write(fn, variables, spec, path):
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"x")

    monkeypatch.setattr(formats, "write_saved_model", write)
    monkeypatch.setattr(formats, "run_saved_model", lambda path, batches: np.zeros((4, 10)) + 3)
    out = tmp_path / "sm"
    with pytest.raises(ExportCheckError, match="disagrees with JAX"):
        export(Request(format="saved_model", out=str(out), checkpoint=str(checkpoints["resnet18"])))
    assert not out.exists() and not list(tmp_path.iterdir())


def _one_error_line(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--format=onnx", "--quantize=int8", "--calibration=folder:/tmp"], "cannot express"),
        (["--format=tflite", "--quantize=int8"], "needs --calibration=folder:PATH"),
        (["--format=tflite", "--calibration=folder:/tmp"], "is for --quantize=int8"),
        (["--format=saved_model", "--float16"], "TFLite weight format"),
        (["--format=tflite", "--float16", "--quantize=int8", "--calibration=folder:/x"], "choose"),
        (["--format=tflite", "--batch-size=0"], "fixed batch size"),
        (["--format=tflite", "--quantize=int8", "--calibration=/photos"], "not folder:PATH"),
        (["--format=tflite", "--quantize=int8", "--calibration=folder:/no/such"], "does not exist"),
    ],
)
def test_options_a_format_cannot_express(capsys, tmp_path, argv, fragment):
    err = _one_error_line(
        capsys, "--model=resnet18", "--weights=w.pth", f"--out={tmp_path}/o", *argv
    )
    assert fragment in err, err


def test_sources_and_outputs_are_checked_first(capsys, tmp_path, checkpoints):
    ckpt = str(checkpoints["resnet18"])
    assert "--model=NAME --weights" in _one_error_line(
        capsys, "--format=onnx", f"--out={tmp_path}/o"
    )
    assert "needs --weights" in _one_error_line(
        capsys, "--model=resnet18", "--format=onnx", f"--out={tmp_path}/o"
    )
    assert "already exists" in _one_error_line(
        capsys, f"--checkpoint={ckpt}", "--format=onnx", f"--out={tmp_path}"
    )
    assert "does not exist" in _one_error_line(
        capsys, "--checkpoint=/no/such/dir", "--format=tflite", f"--out={tmp_path}/x.tflite"
    )
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "one.png").write_bytes(b"")
    assert "at least 2" in _one_error_line(
        capsys,
        f"--checkpoint={ckpt}",
        "--format=tflite",
        "--quantize=int8",
        f"--calibration=folder:{tmp_path}/calib",
        f"--out={tmp_path}/x.tflite",
    )


def test_missing_converter_names_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "missing_converter", lambda fmt: "jax2onnx")
    err = _one_error_line(
        capsys, "--model=resnet18", "--weights=w.pth", "--format=onnx", f"--out={tmp_path}/m.onnx"
    )
    assert "jax2onnx" in err and '".[export]"' in err, err


def test_unknown_model(capsys, tmp_path):
    with pytest.raises(UsageError, match="nosuchnet"):
        export(Request(format="onnx", out=str(tmp_path / "m"), model="nosuchnet", weights="w"))
