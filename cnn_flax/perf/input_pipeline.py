"""Throughput of the train input pipeline on a prepared dataset (preparation excluded).

    python -m cnn_flax.data.benchmark --dataset=folder:DIR --batch-size=64 --steps=200 \
        [--compare=torch]

Prints `img/s: N` for cnn_flax's full train pipeline (Inception crop fused with JPEG decoding,
flip, uint8 output batches on the host), `bare tf.data img/s: N` for a minimal tf.data
decode_and_crop_jpeg + resize pipeline over the same files, and with --compare=torch also
`torch img/s: N` for a torchvision RandomResizedCrop + flip + normalise DataLoader with one
worker per core, and `ratio: N` (cnn_flax / torchvision). The first `--warmup` batches of each
are not timed (thread pools and autotuning start up). On a machine shared with other jobs, use
`--repeats=N`: cnn_flax and bare tf.data are timed alternately N times and the best run of each
(the one least disturbed) is reported; the torchvision DataLoader likewise.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator


def best_of(
    iterator: Iterator, *, repeats: int, steps: int, warmup: int, batch_size: int, desc: str
) -> float:
    """The best rate of `repeats` timed runs of `steps` batches on one warm iterator: on a shared
    machine the fastest run is the one least slowed by other processes."""
    from tqdm import tqdm

    for _ in range(warmup):
        next(iterator)
    rates = []
    for run in range(repeats):
        label = desc if repeats == 1 else f"{desc} ({run + 1}/{repeats})"
        with tqdm(total=steps * batch_size, desc=label, unit=" img", unit_scale=True) as bar:
            start = time.perf_counter()
            for _ in range(steps):
                next(iterator)
                bar.update(batch_size)
            rates.append(steps * batch_size / (time.perf_counter() - start))
    return max(rates)


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _files(dataset: str, data_dir: str | None) -> tuple[list[str], list[int]]:
    if not dataset.startswith("folder:"):
        raise ValueError(
            f"--compare and the bare pipeline need a folder:<path> dataset, got {dataset!r}"
        )
    from cnn_flax.configs.base import get_data_config
    from cnn_flax.data.builders.folder import index_folder

    max_pixels = int(get_data_config().max_image_pixels)
    index = index_folder(dataset[len("folder:") :], max_pixels=max_pixels, data_dir=data_dir)
    paths, labels = index.split("train")
    return list(paths), list(labels)


def cnn_flax_batches(dataset: str, *, batch_size: int, image_size: int, data_dir: str | None):
    from cnn_flax.configs.base import get_data_config
    from cnn_flax.data import pipeline

    config = get_data_config()
    config.name = dataset
    config.data_dir = data_dir
    config.train_split = "train"
    config.image_size = image_size
    config.augment.inception_crop = True
    config.augment.flip = True
    return pipeline.TrainStream(config, global_batch_size=batch_size, seed=0)


def bare_tf_batches(paths: list[str], labels: list[int], *, batch_size: int, image_size: int):
    """The textbook tf.data pipeline: stateful random crop, no determinism guarantees."""
    import tensorflow as tf

    def load(path, label):
        data = tf.io.read_file(path)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.image.extract_jpeg_shape(data),
            tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        image = tf.io.decode_and_crop_jpeg(data, window, channels=3)
        image = tf.image.resize(image, [image_size, image_size])
        image = tf.image.random_flip_left_right(image)
        return tf.saturate_cast(image, tf.uint8), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths)).repeat()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def torch_rate(paths: list[str], labels: list[int], *, image_size: int, **timing) -> float:
    """torchvision's rate, measured in a fresh interpreter: torch's forked DataLoader workers
    crash in a process whose TensorFlow thread pools are already running."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"paths": paths, "labels": labels}, f)
    command = [
        sys.executable, "-m", "cnn_flax.perf.torch_input_pipeline", f"--files={f.name}",
        f"--image-size={image_size}", f"--batch-size={timing['batch_size']}",
        f"--steps={timing['steps']}", f"--warmup={timing['warmup']}",
        f"--repeats={timing['repeats']}",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    finally:
        os.unlink(f.name)
    return float(result.stdout.strip().splitlines()[-1].split(":")[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="e.g. folder:/path/to/images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--compare", choices=["torch"], default=None)
    parser.add_argument("--skip-bare", action="store_true", help="do not time bare tf.data")
    parser.add_argument(
        "--repeats", type=int, default=1,
        help="time each pipeline this many times (cnn_flax and bare tf.data alternate) and "
        "report the best: for a machine shared with other jobs",
    )  # fmt: skip
    args = parser.parse_args(argv)
    timing = dict(
        steps=args.steps, warmup=args.warmup, batch_size=args.batch_size, repeats=args.repeats
    )
    sizes = dict(batch_size=args.batch_size, image_size=args.image_size)
    if not args.skip_bare or args.compare:
        paths, labels = _files(args.dataset, args.data_dir)
    pipelines = {"cnn_flax": iter(cnn_flax_batches(args.dataset, data_dir=args.data_dir, **sizes))}
    if not args.skip_bare:
        pipelines["bare tf.data"] = bare_tf_batches(paths, labels, **sizes)
    rates: dict[str, float] = {}
    cpu_seconds = dict.fromkeys(pipelines, 0.0)
    for run in range(args.repeats):
        for name, iterator in pipelines.items():
            for _ in range(args.warmup if run == 0 else 0):
                next(iterator)
            cpu_start = _cpu_seconds()
            rate = best_of(
                iterator, repeats=1, steps=args.steps, warmup=0, batch_size=args.batch_size,
                desc=name if args.repeats == 1 else f"{name} ({run + 1}/{args.repeats})",
            )  # fmt: skip
            cpu_seconds[name] += _cpu_seconds() - cpu_start
            rates[name] = max(rates.get(name, 0.0), rate)
    ours = rates["cnn_flax"]
    print(f"img/s: {ours:.1f}", flush=True)
    if not args.skip_bare:
        print(f"bare tf.data img/s: {rates['bare tf.data']:.1f}", flush=True)
    # CPU time per image (this process, all threads) is much less sensitive than img/s to other
    # jobs on the machine: cores / (CPU s per image) bounds the rate on an idle machine.
    images = args.repeats * args.steps * args.batch_size
    for name, seconds in cpu_seconds.items():
        print(f"{name} cpu ms/img: {1000 * seconds / images:.3f}", flush=True)
    if args.compare == "torch":
        theirs = torch_rate(paths, labels, image_size=args.image_size, **timing)
        print(f"torch img/s: {theirs:.1f}")
        print(f"ratio: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
