"""Host-side tf.data pipelines for one process: per-process batches of uint8 images.

Exact resumption. The train stream is a pure function of (seed, position). Position k of a
process's stream belongs to epoch k // n (n = the process's shard size) and draws its
augmentation from a stateless seed (seed, global example index), so starting at `start_step`
reproduces, bit for bit, what an uninterrupted run sees from that step:
  * random-access sources (in-memory arrays, file lists): the example at position k is
    shard[perm_{seed,epoch}(k mod n)], a per-epoch permutation computed with
    tf.random.experimental.index_shuffle, so a resume skips nothing;
  * record-streaming tfds sources (ImageNet): each epoch shuffles the record files and a
    buffer with seeds from (seed, epoch); a resume skips the raw records already consumed in
    its epoch (at most one epoch of reading, no decoding).
Eval: every process reads its contiguous, near-equal slice in order and pads it with
mask-False examples to exactly ceil(num_eval / global_batch) batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from cnn_flax.data import augment, datasets, preprocess

Element = dict[str, tf.Tensor]


def _derived_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers (seed, epoch, salt), deterministic across runs."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, np.uint64)[0] >> 1)


def shard_bounds(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[lo, hi) of process `process_index`'s contiguous, near-equal (sizes differ by <= 1) slice."""
    lo = num_examples * process_index // process_count
    hi = num_examples * (process_index + 1) // process_count
    return lo, hi


def per_process_batch(global_batch_size: int, process_count: int) -> int:
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the {process_count} "
            "processes; choose a multiple of the process count"
        )
    return global_batch_size // process_count


def _train_example_fn(data_config: Any, jpeg_only: bool) -> Callable[[Element, tf.Tensor], Element]:
    """(element, per-example seed [2]) -> {"image": uint8 [S, S, 3], "label": int32}."""
    size = int(data_config.image_size)
    pad_crop = bool(data_config.augment.pad_crop)
    inception = bool(data_config.augment.inception_crop)
    flip = bool(data_config.augment.flip)
    crop_ratio = float(data_config.eval_crop_ratio)
    augmenter = augment.from_config(data_config)

    def fn(element: Element, seed: tf.Tensor) -> Element:
        seeds = tf.random.experimental.stateless_split(seed, num=3)
        if "image" in element:  # decoded (small) images
            image = element["image"]
            if pad_crop:
                image = preprocess.pad_and_random_crop(image, seeds[0])
                image = preprocess.preprocess_for_eval_decoded(
                    image, image_size=size, crop_ratio=1.0
                )
            elif inception:
                image = preprocess.inception_crop_decoded(image, seeds[0], image_size=size)
            else:
                image = preprocess.preprocess_for_eval_decoded(
                    image, image_size=size, crop_ratio=1.0
                )
        elif inception:
            image = preprocess.inception_crop(
                element["image_bytes"], seeds[0], image_size=size, jpeg_only=jpeg_only
            )
        else:
            image = preprocess.preprocess_for_eval(
                element["image_bytes"], image_size=size, crop_ratio=crop_ratio, jpeg_only=jpeg_only
            )
        if flip:
            image = preprocess.random_flip(image, seeds[1])
        if augmenter is not None:
            image = augmenter(image, seeds[2])
        image = tf.ensure_shape(image, [size, size, 3])
        return {"image": image, "label": tf.cast(element["label"], tf.int32)}

    return fn


def _eval_example_fn(data_config: Any, jpeg_only: bool) -> Callable[[Element], Element]:
    size = int(data_config.image_size)
    crop_ratio = float(data_config.eval_crop_ratio)

    def fn(element: Element) -> Element:
        if "image" in element:  # small datasets are evaluated on the whole image
            image = preprocess.preprocess_for_eval_decoded(
                element["image"], image_size=size, crop_ratio=1.0
            )
        else:
            image = preprocess.preprocess_for_eval(
                element["image_bytes"], image_size=size, crop_ratio=crop_ratio, jpeg_only=jpeg_only
            )
        image = tf.ensure_shape(image, [size, size, 3])
        return {
            "image": image,
            "label": tf.cast(element["label"], tf.int32),
            "mask": tf.constant(True),
        }

    return fn


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    options.autotune.enabled = True
    # Parallelism comes from processing many images at once; splitting one image's resize
    # across threads only adds synchronisation.
    options.threading.max_intra_op_parallelism = 1
    return options


def _num_calls(data_config: Any) -> int:
    n = int(data_config.num_parallel_calls)
    return tf.data.AUTOTUNE if n < 0 else n


class TrainStream:
    """The per-process train pipeline; iterate for numpy batches {"image", "label"}."""

    def __init__(
        self,
        data_config: Any,
        *,
        global_batch_size: int,
        seed: int,
        start_step: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        source: Any = None,
    ):
        """`source` overrides the dataset named by the config (tests)."""
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.config = data_config
        self.source = source or datasets.get_source(data_config)
        self.split = datasets.splits(data_config, self.source)[0]
        self.global_batch = global_batch_size
        self.batch = per_process_batch(global_batch_size, process_count)
        self.seed = int(seed)
        self.start_step = int(start_step)
        self.process_index = process_index
        total = self.source.split_size(self.split)
        self.lo, self.hi = shard_bounds(total, process_index, process_count)
        self.shard_size = self.hi - self.lo
        if self.shard_size == 0:
            raise ValueError(
                f"split {self.split!r} has {total} examples: too few for {process_count} processes"
            )
        self.example_fn = _train_example_fn(data_config, self.source.jpeg_only)

    def _augment_seed(self, k: tf.Tensor) -> tf.Tensor:
        """Stateless seed (seed, global example index) of local stream position k."""
        b, big_b = self.batch, self.global_batch
        global_index = (k // b) * big_b + self.process_index * b + k % b
        return tf.stack([tf.constant(self.seed, tf.int64), global_index])

    def _finish(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """(element, k) -> preprocessed uint8 batches of the per-process batch size (the last
        batch of a finite stream may be smaller)."""
        ds = ds.map(
            lambda element, k: self.example_fn(element, self._augment_seed(k)),
            num_parallel_calls=_num_calls(self.config),
        )
        ds = ds.batch(self.batch)
        return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())

    def _random_access(self) -> tf.data.Dataset:
        n = self.shard_size
        gather = self.source.gather_fn(self.split, self.lo, self.hi)
        seed = self.seed

        def element(k):
            epoch = k // n
            index = tf.random.experimental.index_shuffle(
                k % n, seed=tf.stack([tf.constant(seed, tf.int64), epoch]), max_index=n - 1
            )
            return gather(index), k

        start = self.start_step * self.batch
        ds = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
        return self._finish(ds.map(element, num_parallel_calls=tf.data.AUTOTUNE))

    def _epoch(self, epoch: int, first: int, last: int) -> tf.data.Dataset:
        """Stream positions [first, last) of `epoch` (a record-streaming source)."""
        n = self.shard_size
        buffer = int(self.config.shuffle_buffer)
        ds = self.source.read(
            self.source.subsplit(self.split, self.lo, self.hi),
            shuffle_seed=_derived_seed(self.seed, epoch, 1),
        )
        if buffer > 1:
            ds = ds.shuffle(
                buffer, seed=_derived_seed(self.seed, epoch, 2), reshuffle_each_iteration=False
            )
        ds = ds.skip(first - epoch * n).take(last - first)
        positions = tf.data.Dataset.range(first, last)
        return tf.data.Dataset.zip(ds, positions)

    def _streamed_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Epoch by epoch. A batch straddling two epochs is assembled from the end of one and a
        short head pipeline of the next (which reads only the shuffle buffer's worth)."""
        n, b = self.shard_size, self.batch
        position = self.start_step * b
        carry: list[dict[str, np.ndarray]] = []
        while True:
            epoch = position // n
            end = (epoch + 1) * n
            head = min(b - position % b, end - position) if position % b else 0
            pieces = [(position, position + head)] if head else []
            if end > position + head:
                pieces.append((position + head, end))
            for first, last in pieces:
                for batch in self._finish(self._epoch(epoch, first, last)).as_numpy_iterator():
                    if not carry and len(batch["label"]) == b:
                        yield batch
                        continue
                    carry.append(batch)
                    if sum(len(c["label"]) for c in carry) == b:
                        yield {key: np.concatenate([c[key] for c in carry]) for key in batch}
                        carry = []
            position = end

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self.source.kind == "tfds":
            return self._streamed_batches()
        return self._random_access().as_numpy_iterator()


def eval_dataset(
    data_config: Any,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    source: Any = None,
) -> tf.data.Dataset:
    """This process's eval batches {"image", "label", "mask"}: ceil(N / global batch) of them on
    every process; padding examples (zeros, label 0) have mask False."""
    source = source or datasets.get_source(data_config)
    split = datasets.splits(data_config, source)[1]
    total = source.split_size(split)
    batch = per_process_batch(global_batch_size, process_count)
    steps = math.ceil(total / global_batch_size)
    lo, hi = shard_bounds(total, process_index, process_count)
    size = int(data_config.image_size)
    ds = source.take_range(split, lo, hi).map(
        _eval_example_fn(data_config, source.jpeg_only), num_parallel_calls=_num_calls(data_config)
    )
    padding = {
        "image": tf.zeros([size, size, 3], tf.uint8),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(False),
    }
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(steps * batch - (hi - lo)))
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE).with_options(_options())
