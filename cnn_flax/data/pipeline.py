"""Host-side tf.data pipelines for one process: per-process batches of uint8 images.

Exact resumption. The train stream is a pure function of (seed, position), and every example
draws its augmentation from a stateless seed (seed, its global index), so starting at
`start_step` reproduces, bit for bit, what an uninterrupted run sees from that step.
  * Random-access sources (in-memory arrays, file lists) follow ONE global stream: global
    position g (step * global_batch + slot) holds example perm_{seed,epoch}(g mod N) of the whole
    split (N examples, epoch = g // N; a permutation by tf.random.experimental.index_shuffle), and
    each process computes only the rows of the global batch it holds. So the global batches do
    not depend on the number of processes (2 processes x 2 devices train exactly like 1 x 4), and
    a resume skips nothing.
  * Record-streaming tfds sources (ImageNet) cannot seek: each process reads its contiguous,
    near-equal shard of the records; each epoch shuffles the shard's record files and a buffer
    with seeds from (seed, epoch), and a resume skips the records already consumed in its epoch
    (at most one epoch of reading, no decoding). Exact for a given process count only.
Repeated augmentation (Hoffer et al., 2020; torchvision's RASampler): with r repeats, r
consecutive stream positions hold the same example, so an epoch of N positions holds N / r
distinct examples, each r times with different augmentations; the r copies are spread over the
batch (rows m, m + B/r, m + 2B/r, ...: different devices when there are >= r) as RASampler puts
them on different GPUs. For streaming sources that happens within each process's batch.
Eval: every process reads its contiguous, near-equal slice in order and pads it with
mask-False examples to exactly ceil(num_eval / global_batch) batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from cnn_flax.data import augment, datasets, preprocess, sizes

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
    size = sizes.train_size(data_config)
    pad_crop = bool(data_config.augment.pad_crop)
    inception = bool(data_config.augment.inception_crop)
    flip = bool(data_config.augment.flip)
    crop_ratio = sizes.eval_sizes(data_config).crop_ratio
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
    """Centre crop of eval_sizes' crop / resize of the shorter side, resized to the crop size."""
    eval_sizes = sizes.eval_sizes(data_config)
    size = eval_sizes.crop

    def fn(element: Element) -> Element:
        if "image" in element:  # small datasets are evaluated on the whole image
            image = preprocess.preprocess_for_eval_decoded(
                element["image"], image_size=size, crop_ratio=1.0
            )
        else:
            image = preprocess.preprocess_for_eval(
                element["image_bytes"],
                image_size=size,
                crop_ratio=eval_sizes.crop_ratio,
                jpeg_only=jpeg_only,
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


def _repeats(data_config: Any, batch: int, what: str) -> int:
    repeats = int(data_config.repeated_augmentation)
    if repeats < 1:
        raise ValueError(f"data.repeated_augmentation must be >= 1 (1 = off), got {repeats}")
    if batch % repeats:
        raise ValueError(
            f"the {what} batch size {batch} is not divisible by data.repeated_augmentation="
            f"{repeats}; choose a multiple, so each batch holds whole sets of copies"
        )
    return repeats


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
        rows: Sequence[int] | None = None,
        source: Any = None,
        start_example: int | None = None,
    ):
        """`rows`: the rows of the global batch this process fills, in the order of its local
        batch (default: the `process_index`-th contiguous block; see device.process_rows).
        `source` overrides the dataset named by the config (tests). `start_example`: position
        in the global stream of the first batch's first example, when not `start_step` batches
        (a run resumed with another batch size goes on from the images it has seen)."""
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.config = data_config
        self.source = source or datasets.get_source(data_config)
        self.split = datasets.splits(data_config, self.source)[0]
        self.global_batch = global_batch_size
        self.batch = per_process_batch(global_batch_size, process_count)
        self.seed = int(seed)
        self.start_step = int(start_step)
        # Examples of the global stream before the first batch beyond start_step whole batches.
        self.shift = (
            0 if start_example is None else int(start_example) - start_step * global_batch_size
        )
        if rows is None:
            rows = range(process_index * self.batch, (process_index + 1) * self.batch)
        self.rows = np.asarray(rows, np.int64)
        if len(set(self.rows)) != self.batch or not all(0 <= r < global_batch_size for r in rows):
            raise ValueError(
                f"rows must be {self.batch} distinct rows of the global batch of "
                f"{global_batch_size}, got {list(rows)}"
            )
        self.num_examples = self.source.split_size(self.split)
        self.streaming = self.source.kind == "tfds"
        if self.streaming:  # the copies stay in their process's batch
            self.repeats = _repeats(data_config, self.batch, "per-process")
        else:
            self.repeats = _repeats(data_config, global_batch_size, "global")
        self.lo, self.hi = (0, self.num_examples)
        if self.streaming:
            self.lo, self.hi = shard_bounds(self.num_examples, process_index, process_count)
        self.shard_size = self.hi - self.lo
        if self.shard_size == 0:
            raise ValueError(
                f"split {self.split!r} has {self.num_examples} examples: too few for "
                f"{process_count} processes"
            )
        self.example_fn = _train_example_fn(data_config, self.source.jpeg_only)

    def _seed_index(self, k: tf.Tensor) -> tf.Tensor:
        """Global index (step * global batch + row) of local stream position k."""
        rows = tf.constant(self.rows)
        return (k // self.batch) * self.global_batch + tf.gather(rows, k % self.batch)

    def _global_position(self, k: tf.Tensor) -> tf.Tensor:
        """Position in the global stream of local position k: the row's slot in its step, with
        the copies of repeated augmentation spread over the batch (slot m * r + j <- row
        j * B / r + m)."""
        r, stride = self.repeats, self.global_batch // self.repeats
        row = tf.gather(tf.constant(self.rows), k % self.batch)
        return (k // self.batch) * self.global_batch + (row % stride) * r + row // stride

    def _finish(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """(element, global index) -> preprocessed uint8 batches of the per-process batch size
        (the last batch of a finite stream may be smaller)."""
        seed = tf.constant(self.seed, tf.int64)
        ds = ds.map(
            lambda element, index: self.example_fn(element, tf.stack([seed, index])),
            num_parallel_calls=_num_calls(self.config),
        )
        ds = ds.batch(self.batch)
        return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())

    def _random_access(self) -> tf.data.Dataset:
        n, r = self.num_examples, self.repeats
        gather = self.source.gather_fn(self.split, 0, n)
        seed = self.seed

        def element(k):
            g = self._global_position(k) + self.shift
            epoch = g // n
            index = tf.random.experimental.index_shuffle(
                (g % n) // r, seed=tf.stack([tf.constant(seed, tf.int64), epoch]), max_index=n - 1
            )
            return gather(index), g

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
        if self.repeats > 1:
            repeats = self.repeats
            ds = ds.flat_map(lambda x: tf.data.Dataset.from_tensors(x).repeat(repeats))
        ds = ds.skip(first - epoch * n).take(last - first)
        indices = tf.data.Dataset.range(first, last).map(self._seed_index)
        return tf.data.Dataset.zip(ds, indices)

    def _spread_copies(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Streaming + repeated augmentation: row j * b / r + m <- position m * r + j."""
        if self.repeats == 1:
            return batch
        stride = self.batch // self.repeats
        rows = np.arange(self.batch)
        order = (rows % stride) * self.repeats + rows // stride
        return {key: value[order] for key, value in batch.items()}

    def _streamed_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Epoch by epoch. A batch straddling two epochs is assembled from the end of one and a
        short head pipeline of the next (which reads only the shuffle buffer's worth)."""
        n, b = self.shard_size, self.batch
        # A shifted start is spread over the processes' shards (exact with one process).
        position = self.start_step * b + self.shift * b // self.global_batch
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
                        yield self._spread_copies(batch)
                        continue
                    carry.append(batch)
                    if sum(len(c["label"]) for c in carry) == b:
                        whole = {key: np.concatenate([c[key] for c in carry]) for key in batch}
                        yield self._spread_copies(whole)
                        carry = []
            position = end

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self.streaming:
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
    size = sizes.eval_sizes(data_config).crop
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
