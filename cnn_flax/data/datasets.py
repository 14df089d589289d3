"""Dataset names -> sources: which tfds builder, splits, sizes, and how examples are read.

Three kinds of source, chosen for exact resumption (see pipeline.py):
  * ArraySource: small datasets (digits, CIFAR) decoded once into host memory; random access.
  * FileSource: a user's image folder (`folder:<path>`); a list of validated file paths.
  * TfdsSource: large tfds datasets (imagenet2012, imagenette) streamed from their records.
Elements are dicts with "label" and either "image" (uint8 HWC) or "image_bytes" (encoded).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import socket
import threading
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


# Published split sizes (the data sets' papers and tfds catalogue), for a dry run on a machine
# where the data set is not prepared: its tfds metadata then holds no sizes.
PUBLISHED_SPLIT_SIZES = {
    "imagenet2012": {"train": 1_281_167, "validation": 50_000},
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
}


class DatasetInfo(NamedTuple):
    num_classes: int
    num_train: int
    num_eval: int


class DatasetNotPreparedError(RuntimeError):
    """The dataset needs a manual download or a prepare step before it can be read."""


def resolve_data_dir(data_dir: str | None) -> str | None:
    """Config value, else $TFDS_DATA_DIR, else None (tfds' default, ~/tensorflow_datasets).

    Raises:
      ValueError: the folder is an existing file (tfds would fail deep inside, after taking a
        lock next to it).
    """
    resolved = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    if resolved and "://" not in resolved and os.path.isfile(resolved):
        where = "--config.data.data_dir" if data_dir else "$TFDS_DATA_DIR"
        raise ValueError(
            f"{where} is {resolved}, a file, not a folder: point it at a folder (or unset "
            "it for ~/tensorflow_datasets)."
        )
    return resolved


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
        _check_download_reachable(name, builder, data_dir=data_dir)
        builder.download_and_prepare()
    return builder


# Where each downloadable set comes from (the host of the URL its tfds builder fetches), so that
# an offline machine is told at once rather than after minutes of tfds' retries.
DOWNLOAD_HOSTS = {
    "cifar10": ("www.cs.toronto.edu", 443),
    "cifar100": ("www.cs.toronto.edu", 443),
    "imagenette": ("s3.amazonaws.com", 443),
}


def _check_download_reachable(
    name: str, builder: tfds.core.DatasetBuilder, *, data_dir: str | None
) -> None:
    """Raises :class:`DatasetNotPreparedError` when ``name``'s download host cannot be reached.

    Connects once (10 s at most, name lookup included); the download itself is left to tfds.
    """
    host, port = DOWNLOAD_HOSTS.get(name.partition("/")[0], (None, 0))
    if host is None:
        return
    outcome: list[str] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=10).close()
            outcome.append("")
        except OSError as err:
            outcome.append(str(err) or type(err).__name__)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout=10)
    reason = outcome[0] if outcome else "no answer in 10 s"
    if reason:
        root = data_dir or os.path.expanduser("~/tensorflow_datasets")
        raise DatasetNotPreparedError(
            f"{name} is not prepared in {root} and its download from {host} "
            f"cannot be reached ({reason}). On a machine with internet run `python -m "
            f"cnn_flax.data.prepare {name}`, then copy ~/tensorflow_datasets/{builder.name} "
            f"into {root} (or pass --config.data.data_dir=<a folder holding it>)."
        )


def _digits_builder(name: str, data_dir: str | None, *, prepare: bool = True):
    from cnn_flax.data.builders.digits import Digits

    config = name.partition("/")[2] or "32"
    builder = Digits(config=config, data_dir=data_dir)
    if prepare and not _quietly_prepared(builder):
        # tfds prints "Downloading and preparing dataset Unknown size ..." and draws five
        # progress bars for any builder, though digits downloads nothing and prepares in a
        # second: keep the console for the trainer's own lines.
        from tensorflow_datasets.core.utils import tqdm_utils

        shown = tqdm_utils._active  # tfds has a setter only
        tfds.display_progress_bar(False)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                builder.download_and_prepare()
        finally:
            tfds.display_progress_bar(shown)
    return builder


class _NotPreparedYet(logging.Filter):
    """Drops tfds's "Variant folder .../1.0.0 has no dataset_info.json" warning: ``is_prepared``
    logs it for any data set not prepared yet, which on a first digits run is the expected state
    (the caller prepares it next), not a fault to warn about."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Variant folder")


def _quietly_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    absl_logger = logging.getLogger("absl")
    quiet = _NotPreparedYet()
    absl_logger.addFilter(quiet)
    try:
        return builder.is_prepared()
    finally:
        absl_logger.removeFilter(quiet)


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
    """(train_split, eval_split): the config's, or the dataset's defaults when unset.

    A folder set with no sub-folder for the configured eval split (a recipe's ``test`` or
    ``validation``) and only ``train`` images holds out its own stratified 10% instead, said once
    in one line, as the ``finetune`` recipe does by default."""
    train = str(data_config.train_split or source.default_splits[0])
    evals = str(data_config.eval_split or source.default_splits[1])
    if source.kind == "files":
        train, evals = _folder_splits(source, train, evals)
    return train, evals


_ANNOUNCED: set[tuple[str, str]] = set()


def _folder_splits(source, train: str, evals: str) -> tuple[str, str]:
    index = source.index
    wanted = re.match(r"\w+", evals)
    if set(index.files) != {"train"} or not wanted:
        return train, evals
    if (train, evals) == index.default_splits:  # no eval split configured: the same hold-out
        wanted_text = "val/ or test/"
    elif train == "train" and wanted.group(0) not in index.files:
        wanted_text = f"{wanted.group(0)}/"
    else:
        return train, evals
    train, held_out = index.default_splits
    if (index.root, evals) not in _ANNOUNCED:
        _ANNOUNCED.add((index.root, evals))
        message = (
            f"Folder {index.root} has no {wanted_text} sub-folder: training on {train} and "
            f"evaluating on {held_out}, held out per class (fixed seed; the list goes to the "
            f"workdir's {HELD_OUT_FILE})."
        )
        sides = {name: set(index.split(name)[1]) for name in (train, held_out)}
        short = [
            cls
            for label, cls in enumerate(index.class_names)
            if any(label not in labels for labels in sides.values())
        ]
        if short:
            message += (
                f" Too few images for both sides in class(es) {', '.join(short[:10])}: add "
                "images, or a val/ folder."
            )
        print(message, flush=True)
    return train, held_out


HELD_OUT_FILE = "held_out.json"


def held_out_record(data_config: Any) -> dict | None:
    """What a folder set without an eval sub-folder holds out of ``train/`` for evaluation (see
    :func:`splits`), for the trainer to write as ``held_out.json``: the two splits, the seed of
    :func:`cnn_flax.data.builders.folder.stratified_order`, the counts per class and the held-out
    files (relative to the folder), so a later look can tell which images the model never
    trained on. ``None`` for any other data set or split."""
    source = get_source(data_config)
    if not isinstance(source, FileSource):
        return None
    train, evals = splits(data_config, source)
    base = re.match(r"\w+", evals)
    if "[" not in evals or not base or base.group(0) != re.match(r"\w*", train).group(0):
        return None
    index = source.index
    _, train_labels = index.split(train)
    held_paths, held_labels = index.split(evals)
    return {
        "folder": index.root,
        "train_split": train,
        "eval_split": evals,
        "order": "stratified per class, seed 0",
        "per_class": {
            cls: {"train": train_labels.count(label), "held_out": held_labels.count(label)}
            for label, cls in enumerate(index.class_names)
        },
        "held_out": [os.path.relpath(path, index.root) for path in held_paths],
    }


def sizes_without_reading(data_config: Any) -> tuple[DatasetInfo, str]:
    """(num_classes, num_train, num_eval) read from metadata only, and where they came from.

    A prepared tfds data set's own metadata (``dataset_info.json``: no record is opened), else
    the published sizes of the standard splits (:data:`PUBLISHED_SPLIT_SIZES`). For
    ``cnn_flax.train --dry_run``, which must not read data.

    Raises:
      ValueError: for a data set (or split) whose sizes are known neither way, naming the fix.
    """
    name = str(data_config.name)
    base = name.partition("/")[0]
    default = _DEFAULT_SPLITS.get(base)
    if default is not None:
        train = str(data_config.train_split or default[0])
        evals = str(data_config.eval_split or default[1])
        data_dir = resolve_data_dir(data_config.data_dir)
        if base == "digits":
            builder = _digits_builder(name, data_dir, prepare=False)
        else:
            builder = tfds.builder(name, data_dir=data_dir)
        classes = builder.info.features["label"].num_classes
        if _is_prepared(builder) and builder.info.splits:
            splits = builder.info.splits
            info = DatasetInfo(classes, splits[train].num_examples, splits[evals].num_examples)
            return info, f"{builder.info.full_name} metadata in {builder.data_dir}"
        published = PUBLISHED_SPLIT_SIZES.get(name, {})
        if train in published and evals in published:
            info = DatasetInfo(classes, published[train], published[evals])
            return info, f"published sizes of {name} (not prepared here)"
    raise ValueError(
        f"the sizes of data set {name!r} (splits {data_config.train_split or 'default'}, "
        f"{data_config.eval_split or 'default'}) are unknown without reading it; prepare it, or "
        "pass --num_train=N to the dry run."
    )


def get_dataset_info(data_config: Any) -> DatasetInfo:
    """(num_classes, num_train, num_eval) of the configured dataset and splits."""
    source = get_source(data_config)
    train, evals = splits(data_config, source)
    return DatasetInfo(source.num_classes, source.split_size(train), source.split_size(evals))


def class_names(data_config: Any) -> list[str]:
    """The names of the configured data set's classes, in label order.

    A folder set's sub-folder names, a tfds set's label names (digits: "0".."9"), and ImageNet's
    readable names (torchvision's list) rather than its WordNet ids.
    """
    source = get_source(data_config)
    if isinstance(source, FileSource):
        return list(source.index.class_names)
    if str(data_config.name).startswith("imagenet2012") and source.num_classes == 1000:
        from cnn_flax.data.classes import imagenet_class_names

        return imagenet_class_names()
    return list(source.builder.info.features["label"].names)
