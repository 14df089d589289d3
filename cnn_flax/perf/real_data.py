"""The benchmark's real-data pass: the same compiled train step fed from JPEG files.

Synthetic inputs show what the device can do; training also needs the host to decode, crop and
copy every image in time. This pass runs the step the synthetic pass timed on batches from an
input pipeline and reports the end-to-end images per second next to the synthetic rate, and
how long the host waited for the pipeline per step, which says whether the input pipeline is
the bottleneck.

Loaders:
- ``cnn_flax``: the trainer's own input pipeline (``cnn_flax.data.create_train_iterator``:
  tf.data, Inception crop fused with JPEG decoding, flip, uint8 batches, prefetch to device)
  with the trainer's step, which normalises the uint8 images on the device. Needs TensorFlow.
- ``torch``: torchvision's standard transform in a DataLoader with one worker per core
  (``cnn_flax.perf.torch_input_pipeline``) feeding the minimal step float32 images: for machines
  without TensorFlow, such as the GPU machine. It measures a typical PyTorch input pipeline on
  those CPUs, not cnn_flax's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import jax
import numpy as np

from cnn_flax.perf import jax_bench

LOADERS = ("cnn_flax", "torch")


@dataclasses.dataclass(frozen=True)
class RealDataResult:
    """End-to-end rate over ``steps`` timed steps and the host's wait for input batches."""

    loader: str
    dataset: str
    steps: int
    images_per_s: float
    synthetic_images_per_s: float
    wait_ms_per_step: float
    step_ms: float

    @property
    def fraction_of_synthetic(self) -> float:
        return self.images_per_s / self.synthetic_images_per_s

    @property
    def input_bound(self) -> bool:
        """Whether waiting for batches took more than a tenth of the step time."""
        return self.wait_ms_per_step > 0.1 * self.step_ms

    def describe(self) -> list[str]:
        verdict = (
            "input pipeline is the bottleneck"
            if self.input_bound
            else "input pipeline keeps up (waits under 10% of the step)"
        )
        return [
            f"real data ({self.loader} loader, {self.dataset}): {self.images_per_s:.1f} img/s "
            f"end to end = {100 * self.fraction_of_synthetic:.1f}% of synthetic "
            f"{self.synthetic_images_per_s:.1f} img/s",
            f"waiting for data: {self.wait_ms_per_step:.1f} ms per step of "
            f"{self.step_ms:.1f} ms ({verdict})",
        ]


def required_step(loader: str) -> str:
    """The train step a loader's batches fit: uint8 for cnn_flax's pipeline, float for torch's.

    Raises:
      ValueError: for an unknown loader.
    """
    if loader not in LOADERS:
        raise ValueError(f"--data-loader={loader!r}; choose one of {LOADERS}.")
    return "trainer" if loader == "cnn_flax" else "minimal"


def check(loader: str, dataset: str) -> None:
    """Fails fast, before any compilation, where ``loader`` cannot read ``dataset`` here.

    Raises:
      ValueError: naming the missing package or directory and what to use instead.
    """
    import importlib.util
    import pathlib

    required_step(loader)
    needs = ("tensorflow",) if loader == "cnn_flax" else ("torch", "torchvision", "PIL")
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        other = "torch" if loader == "cnn_flax" else "cnn_flax"
        raise ValueError(
            f"--data-loader={loader} needs {', '.join(missing)}, not installed here; use "
            f"--data-loader={other}."
        )
    if loader == "torch" and not dataset.startswith("folder:"):
        raise ValueError(f"--data-loader=torch reads a folder:<path> dataset, got {dataset!r}.")
    if dataset.startswith("folder:"):
        root = pathlib.Path(dataset[len("folder:") :]).expanduser()
        if not root.is_dir():
            raise ValueError(
                f"--data={dataset}: {root} is not a directory; make one with "
                "`python -m cnn_flax.data.make_fake_images --out=DIR`."
            )


def _cnn_flax_batches(
    dataset: str, *, data_dir: str | None, batch_size: int, resolution: int
) -> Iterator[tuple]:
    from cnn_flax.configs.base import get_data_config
    from cnn_flax.data import iterators

    config = get_data_config()
    config.name = dataset
    config.data_dir = data_dir
    config.image_size = resolution
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    stream = iterators.create_train_iterator(
        config, global_batch_size=batch_size, seed=0, sharding=sharding
    )
    for batch in stream:
        yield ({"image": batch["image"], "label": batch["label"]},)


def _torch_batches(
    dataset: str, *, data_dir: str | None, batch_size: int, resolution: int
) -> Iterator[tuple]:
    from cnn_flax.data import device
    from cnn_flax.data.builders.folder import list_images
    from cnn_flax.perf.torch_input_pipeline import torch_batches

    # By name only: indexing decodes every file with TensorFlow, which this loader must not need.
    paths, labels = list_images(dataset[len("folder:") :])

    def host_batches() -> Iterator[dict[str, np.ndarray]]:
        for images, targets in torch_batches(
            list(paths), list(labels), batch_size=batch_size, image_size=resolution
        ):
            # NCHW float from torchvision -> the NHWC layout the models take.
            yield {
                "image": np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()),
                "label": targets.numpy().astype(np.int32),
            }

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    for batch in device.prefetch_to_device(host_batches(), sharding, size=2):
        yield (batch["image"], batch["label"])


def batches(
    loader: str, dataset: str, *, data_dir: str | None, batch_size: int, resolution: int
) -> Iterator[tuple]:
    """Step inputs (the arguments after the state) from ``loader`` over ``dataset``."""
    required_step(loader)
    make = _cnn_flax_batches if loader == "cnn_flax" else _torch_batches
    return make(dataset, data_dir=data_dir, batch_size=batch_size, resolution=resolution)


def run(
    result: jax_bench.Result,
    *,
    loader: str,
    dataset: str,
    data_dir: str | None,
    steps: int,
    warmup: int,
) -> RealDataResult:
    """Times ``result``'s compiled train step on real batches, one device sync at the end.

    The host measures only its wait in ``next()``: the step is dispatched asynchronously, so a
    pipeline faster than the device never makes the host wait, and one slower than the device
    makes it wait for most of the step.
    """
    prepared = result.prepared
    s = result.settings
    if s.mode != "train":
        raise ValueError("--data needs --mode=train (the real-data pass times training).")
    source = batches(
        loader, dataset, data_dir=data_dir, batch_size=s.batch_size, resolution=result.resolution
    )
    compiled = result.compiled
    state = prepared.state
    for _ in range(warmup):  # pipeline start-up: thread pools, worker processes, autotuning
        state, _ = compiled(state, *next(source))
    state = jax.block_until_ready(state)
    waited = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        before = time.perf_counter()
        inputs = next(source)
        waited += time.perf_counter() - before
        state, _ = compiled(state, *inputs)
    prepared.state = jax.block_until_ready(state)  # the donated state's successor
    seconds = time.perf_counter() - start
    return RealDataResult(
        loader=loader,
        dataset=dataset,
        steps=steps,
        images_per_s=steps * s.batch_size / seconds,
        synthetic_images_per_s=result.images_per_s,
        wait_ms_per_step=1e3 * waited / steps,
        step_ms=1e3 * seconds / steps,
    )
