"""Dataset names -> sources: which tfds builder, splits, sizes, and how examples are read.

Three kinds of source, chosen for exact resumption (see pipeline.py):
  * ArraySource: small datasets (digits, CIFAR) decoded once into host memory; random access.
  * FileSource: a user's image folder (`folder:<path>`); a list of validated file paths.
  * TfdsSource: large tfds datasets (imagenet2012, imagenette) streamed from their records.
Elements are dicts with "label" and either "image" (uint8 HWC) or "image_bytes" (encoded).
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

SUPPORTED = (
    "imagenet2012",
    "imagenette[/<config>] (e.g. imagenette/320px-v2)",
    "cifar10",
    "cifar100",
    "digits[/<size>] (offline, 8x8 digits shown at <size>, default 32)",
    "folder:<path> (one sub-folder per class, optionally under train/ and val/)",
)
_DEFAULT_SPLITS = {
    "imagenet2012": ("train", "validation"),
    "imagenette": ("train", "validation"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "digits": ("train", "test"),
}


class DatasetInfo(NamedTuple):
    num_classes: int
    num_train: int
    num_eval: int


class DatasetNotPreparedError(RuntimeError):
    """The dataset needs a manual download or a prepare step before it can be read."""


def resolve_data_dir(data_dir: str | None) -> str | None:
    """Config value, else $TFDS_DATA_DIR, else None (tfds' default, ~/tensorflow_datasets)."""
    return data_dir or os.environ.get("TFDS_DATA_DIR") or None


class ArraySource:
    """A small dataset decoded into memory: elements {"image": uint8 [H, W, 3], "label"}."""

    kind = "array"
    jpeg_only = False

    def __init__(self, builder: tfds.core.DatasetBuilder, splits: tuple[str, str]):
        self.builder = builder
        self.default_splits = splits
        self.num_classes = builder.info.features["label"].num_classes

    def split_size(self, split: str) -> int:
        return len(self.arrays(split)["label"])

    @functools.lru_cache(maxsize=4)  # noqa: B019  (a few small splits, kept for the process)
    def arrays(self, split: str) -> dict[str, np.ndarray]:
        ds = self.builder.as_dataset(split=split, shuffle_files=False).batch(4096)
        images, labels = [], []
        for batch in tfds.as_numpy(ds):
            images.append(batch["image"])
            labels.append(batch["label"])
        image = np.concatenate(images).astype(np.uint8)
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        return {"image": image, "label": np.concatenate(labels).astype(np.int32)}

    def take_range(self, split: str, lo: int, hi: int) -> tf.data.Dataset:
        arrays = self.arrays(split)
        return tf.data.Dataset.from_tensor_slices({k: v[lo:hi] for k, v in arrays.items()})

    def gather_fn(self, split: str, lo: int, hi: int):
        """(fn(index in [0, hi - lo)) -> element) for random access to the shard [lo, hi)."""
        arrays = self.arrays(split)
        images = tf.constant(arrays["image"][lo:hi])
        labels = tf.constant(arrays["label"][lo:hi])
        return lambda i: {"image": tf.gather(images, i), "label": tf.gather(labels, i)}


class FileSource:
    """Image files on disk: elements {"image_bytes": file contents, "label"}."""

    kind = "files"

    def __init__(self, index: Any):
        self.index = index  # builders.folder.FolderIndex
        self.default_splits = index.default_splits
        self.num_classes = len(index.class_names)
        self.jpeg_only = index.jpeg_only

    def split_size(self, split: str) -> int:
        return len(self.index.split(split)[0])

    def _slices(self, split: str, lo: int, hi: int):
        paths, labels = self.index.split(split)
        return np.asarray(paths[lo:hi], dtype=object), np.asarray(labels[lo:hi], np.int32)

    def take_range(self, split: str, lo: int, hi: int) -> tf.data.Dataset:
        paths, labels = self._slices(split, lo, hi)
        ds = tf.data.Dataset.from_tensor_slices((paths.astype(str), labels))
        return ds.map(
            lambda p, y: {"image_bytes": tf.io.read_file(p), "label": y},
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def gather_fn(self, split: str, lo: int, hi: int):
        paths, labels = self._slices(split, lo, hi)
        paths_t, labels_t = tf.constant(paths.astype(str)), tf.constant(labels)
        return lambda i: {
            "image_bytes": tf.io.read_file(tf.gather(paths_t, i)),
            "label": tf.gather(labels_t, i),
        }


class TfdsSource:
    """A large tfds dataset read from its prepared records; images stay JPEG-encoded."""

    kind = "tfds"

    def __init__(self, builder: tfds.core.DatasetBuilder, splits: tuple[str, str]):
        self.builder = builder
        self.default_splits = splits
        self.num_classes = builder.info.features["label"].num_classes
        image = builder.info.features["image"]
        self.jpeg_only = getattr(image, "encoding_format", None) == "jpeg"

    def split_size(self, split: str) -> int:
        splits = self.builder.info.splits
        if not splits:  # metadata without split sizes (tfds.testing.mock_data): count
            count = int(self.read(split, shuffle_seed=None).cardinality())
            if count >= 0:
                return count
        try:
            return splits[split].num_examples
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"split {split!r} is not in {self.builder.info.full_name}; "
                f"available: {sorted(splits.keys())}"
            ) from error

    def read(self, split: str, *, shuffle_seed: int | None) -> tf.data.Dataset:
        """The split with images undecoded; files shuffled by `shuffle_seed` (None: in order)."""
        read_config = tfds.ReadConfig(
            shuffle_seed=shuffle_seed, interleave_cycle_length=16, interleave_block_length=1
        )
        ds = self.builder.as_dataset(
            split=split,
            shuffle_files=shuffle_seed is not None,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
        return ds.map(lambda x: {"image_bytes": x["image"], "label": tf.cast(x["label"], tf.int32)})

    def subsplit(self, split: str, lo: int, hi: int) -> str:
        """A tfds split string for examples [lo, hi) of `split` (which may itself be a slice)."""
        splits = self.builder.info.splits
        if "[" not in split or not splits:
            return f"{split}[{lo}:{hi}]"
        parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(dict(splits.items()))
        if len(parts) != 1:
            raise ValueError(f"split {split!r}: combined splits (+) are not supported here")
        part = parts[0]
        start = part.from_ or 0
        return f"{part.splitname}[{start + lo}:{start + hi}]"

    def take_range(self, split: str, lo: int, hi: int) -> tf.data.Dataset:
        return self.read(self.subsplit(split, lo, hi), shuffle_seed=None)


def _imagenet_not_prepared(builder: tfds.core.DatasetBuilder, data_dir: str | None) -> str:
    root = data_dir or os.path.expanduser("~/tensorflow_datasets")
    manual = os.path.join(root, "downloads", "manual")
    return (
        f"imagenet2012 is not prepared in {builder.data_dir}. Download ILSVRC2012 from "
        f"https://image-net.org and place {manual}/ILSVRC2012_img_train.tar and "
        f"{manual}/ILSVRC2012_img_val.tar, then run `python -m cnn_flax.data.prepare imagenet2012"
        f" --data_dir={root}` (or `tfds build imagenet2012 --data_dir={root} "
        f"--manual_dir={manual}`). Preparing takes a few hours."
    )


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    """Separate function so tests running under tfds.testing.mock_data can override it."""
    return builder.is_prepared()


def _tfds_builder(name: str, data_dir: str | None, *, auto_prepare: bool):
    builder = tfds.builder(name, data_dir=data_dir)
    if not _is_prepared(builder):
        if name.startswith("imagenet2012"):
            raise DatasetNotPreparedError(_imagenet_not_prepared(builder, data_dir))
        if not auto_prepare:
            raise DatasetNotPreparedError(
                f"{name} is not prepared in {builder.data_dir}; run "
                f"`python -m cnn_flax.data.prepare {name}`"
            )
        builder.download_and_prepare()
    return builder


def _digits_builder(name: str, data_dir: str | None):
    from cnn_flax.data.builders.digits import Digits

    config = name.partition("/")[2] or "32"
    builder = Digits(config=config, data_dir=data_dir)
    if not builder.is_prepared():
        builder.download_and_prepare()
    return builder


def get_source(data_config: Any, *, auto_prepare: bool = True):
    """The source named by `data_config.name`. Raises ValueError listing supported names."""
    name = str(data_config.name)
    data_dir = resolve_data_dir(data_config.data_dir)
    max_pixels = int(data_config.max_image_pixels) if name.startswith("folder:") else 0
    return _get_source_cached(name, data_dir, auto_prepare, max_pixels)


@functools.lru_cache(maxsize=8)
def _get_source_cached(name: str, data_dir: str | None, auto_prepare: bool, max_pixels: int):
    base = name.partition("/")[0]
    if name.startswith("folder:"):
        from cnn_flax.data.builders.folder import index_folder

        path = name[len("folder:") :]
        return FileSource(index_folder(path, max_pixels=max_pixels, data_dir=data_dir))
    if base == "digits":
        return ArraySource(_digits_builder(name, data_dir), _DEFAULT_SPLITS["digits"])
    if base in ("cifar10", "cifar100"):
        return ArraySource(
            _tfds_builder(name, data_dir, auto_prepare=auto_prepare), _DEFAULT_SPLITS[base]
        )
    if base in ("imagenet2012", "imagenette"):
        return TfdsSource(
            _tfds_builder(name, data_dir, auto_prepare=auto_prepare), _DEFAULT_SPLITS[base]
        )
    raise ValueError(f"unknown dataset {name!r}; supported: " + "; ".join(SUPPORTED))


def splits(data_config: Any, source) -> tuple[str, str]:
    """(train_split, eval_split): the config's, or the dataset's defaults when unset."""
    train = data_config.train_split or source.default_splits[0]
    evals = data_config.eval_split or source.default_splits[1]
    return str(train), str(evals)


def get_dataset_info(data_config: Any) -> DatasetInfo:
    """(num_classes, num_train, num_eval) of the configured dataset and splits."""
    source = get_source(data_config)
    train, evals = splits(data_config, source)
    return DatasetInfo(source.num_classes, source.split_size(train), source.split_size(evals))
