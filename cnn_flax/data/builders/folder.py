"""A user's image folder as a data set: `folder:<path>`, one sub-folder per class.

Layouts (class names = sub-folder names, sorted; label = index):
  <path>/<class>/<image>                   one split, "train"
  <path>/<split>/<class>/<image>           used when <path>/train exists; e.g. train/ and val/
Splits can be sliced like tfds splits: "train[:90%]", "train[90%:]", "val[:1000]".

Like tfds.ImageFolder, the images stay as files and are read directly (no copy). Unlike it, every
file is decoded once, in full, when the data set is indexed (in parallel, with a progress bar), by
the TensorFlow decoder the input pipeline uses: a header check such as PIL's `verify()` passes a
truncated JPEG, which then stops training at the first batch that draws it, naming no path. What
is skipped and reported once, by path, before training:
  * hidden files and folders (names starting with "."), files without an image extension, files
    outside a class folder;
  * files TensorFlow cannot decode;
  * images of more than `max_pixels` pixels (only their header is read): one 12000 x 12000 JPEG
    is 0.4 GB decoded and several GB through the resize.
A train class folder without a readable image is refused rather than kept or dropped: kept, it is
an output the model can never learn; dropped, every later class's label shifts. In an eval split
such a folder is only reported (train/ defines the classes).
Each file's result is cached in <data_dir>/cnn_flax_folder_index/, keyed by its path, size and
modification time, so a rerun decodes only new or changed files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# Formats tf.io.decode_image reads.
_TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "MPO")
_SPLIT_NAMES = ("train", "val", "validation", "test")
_MAX_LISTED = 20
_CACHE_VERSION = 3
HIDDEN = "hidden (name starts with '.')"
NOT_IMAGE = f"not an image file name (extensions: {', '.join(IMAGE_EXTENSIONS)})"
OUTSIDE_CLASS = "not inside a class folder"

# A cached probe: [size, mtime_ns, format, height, width, error, decoded].
Record = list


class FolderDatasetError(ValueError):
    """A folder data set that cannot be used as it is; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class FolderIndex:
    """The readable images of an image folder."""

    root: str
    class_names: tuple[str, ...]
    files: dict[str, tuple[tuple[str, ...], tuple[int, ...]]]  # split -> (paths, labels)
    skipped: tuple[tuple[str, str], ...]  # (path, reason)
    jpeg_only: bool = False  # every kept file is a JPEG: the pipeline skips format tests

    @property
    def default_splits(self) -> tuple[str, str]:
        for name in ("val", "validation", "test"):
            if name in self.files:
                return "train", name
        return "train[:90%]", "train[90%:]"

    def split(self, spec: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """(paths, labels) of a split, possibly sliced: "train", "train[:90%]", "val[10:20]"."""
        match = re.fullmatch(r"(\w+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?", spec.strip())
        if not match or match.group(1) not in self.files:
            raise ValueError(
                f"split {spec!r} is not in folder dataset {self.root}; available: "
                f"{sorted(self.files)} (slices like 'train[:90%]' are allowed)"
            )
        paths, labels = self.files[match.group(1)]
        n = len(paths)

        def bound(text: str, percent: str, default: int) -> int:
            if text == "":
                return default
            value = int(text)
            return int(math.floor(n * value / 100 + 0.5)) if percent else value

        lo = bound(match.group(2) or "", match.group(3) or "", 0)
        hi = bound(match.group(4) or "", match.group(5) or "", n)
        return paths[lo:hi], labels[lo:hi]


# --- listing --------------------------------------------------------------------------------------


def _list_class(folder: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """The candidate images under one class folder (sorted); the rest goes to `skipped`."""
    files = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            skipped.append((str(path), HIDDEN))
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((str(path), NOT_IMAGE))
        else:
            files.append(path)
    return files


def _list_files(root: Path, skipped: list[tuple[str, str]]) -> dict[str, dict[str, list[Path]]]:
    """split -> class -> candidate images; hidden entries and loose files go to `skipped`."""
    split_dirs = {name: root / name for name in _SPLIT_NAMES if (root / name).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"train": root}
    listing = {}
    for split, directory in split_dirs.items():
        classes = {}
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith("."):
                skipped.append((str(entry), HIDDEN))
            elif not entry.is_dir():
                skipped.append((str(entry), OUTSIDE_CLASS))
            else:
                classes[entry.name] = _list_class(entry, skipped)
        listing[split] = classes
    return listing


def _check_layout(root: Path, listing: dict[str, dict[str, list[Path]]]) -> tuple[str, ...]:
    """The class names; raises before any decoding when the layout cannot be trained on."""
    class_names = tuple(sorted(listing["train"]))
    if not class_names:
        raise FolderDatasetError(
            f"folder dataset {root} has no class sub-folders; expected <path>/<class>/<image> or "
            "<path>/train/<class>/<image>"
        )
    for split, classes in listing.items():
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise FolderDatasetError(
                f"folder dataset {root}: classes {unknown} of split {split!r} are not in train/; "
                "every class needs train images"
            )
    _refuse_empty_classes(root, listing["train"])
    return class_names


def _refuse_empty_classes(root: Path, train: dict[str, list], *, after: str = "") -> None:
    empty = sorted(name for name, files in train.items() if not files)
    if empty:
        shown = ", ".join(empty[:_MAX_LISTED]) + (" ..." if len(empty) > _MAX_LISTED else "")
        raise FolderDatasetError(
            f"folder dataset {root}: {len(empty)} train class folder(s) hold no readable image"
            f"{after}: {shown}. Add images or remove these folders: an empty class would be an "
            "output the model never learns."
        )


# --- probing (cached) -----------------------------------------------------------------------------


def _tf_error_text(error: Exception) -> str:
    message = getattr(error, "message", str(error))
    return re.sub(r"\{\{.*?\}\}\s*", "", message).strip().splitlines()[0]


def _probe(path: Path, size: int, mtime_ns: int, max_pixels: int) -> Record:
    """Reads the header and, unless the image has more than `max_pixels` pixels, decodes all of
    it with the pipeline's decoder (tf.io.decode_image)."""
    import tensorflow as tf
    from PIL import Image

    head = [size, mtime_ns]
    try:
        data = path.read_bytes()
    except OSError as error:
        return [*head, None, 0, 0, f"cannot be read ({error})", False]
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError as error:
        return [*head, None, 0, 0, f"too large to open ({error})", False]
    except Exception as error:  # PIL raises many types for bad files  # noqa: BLE001
        return [*head, None, 0, 0, f"not a readable image ({type(error).__name__}: {error})", False]
    if fmt not in _TF_FORMATS:
        return [*head, fmt, height, width, f"format {fmt} is not readable by TensorFlow", False]
    if height * width > max_pixels:
        return [*head, fmt, height, width, None, False]
    try:
        shape = tf.io.decode_image(data, channels=3, expand_animations=False).shape
    except tf.errors.OpError as error:
        return [*head, fmt, height, width, f"cannot be decoded ({_tf_error_text(error)})", True]
    return [*head, fmt, int(shape[0]), int(shape[1]), None, True]


def _needs_probe(record: Record | None, size: int, mtime_ns: int, max_pixels: int) -> bool:
    if record is None or record[0] != size or record[1] != mtime_ns:
        return True
    _, _, _, height, width, error, decoded = record
    return not decoded and error is None and height * width <= max_pixels


def _skip_reason(record: Record, max_pixels: int) -> str | None:
    _, _, _, height, width, error, _ = record
    if error is not None:
        return error
    if height * width > max_pixels:
        return (
            f"{width}x{height} = {height * width:,} pixels, more than "
            f"data.max_image_pixels = {max_pixels:,}"
        )
    return None


def _cache_file(root: Path, data_dir: str | None) -> Path:
    base = Path(data_dir or os.path.expanduser("~/tensorflow_datasets"))
    key = hashlib.sha1(str(root).encode()).hexdigest()[:16]
    return base / "cnn_flax_folder_index" / f"{root.name}-{key}.json"


def _load_cache(cache: Path) -> dict[str, Record]:
    try:
        stored = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}  # absent or unreadable (e.g. an interrupted write from another version)
    return stored.get("files", {}) if stored.get("version") == _CACHE_VERSION else {}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # processes may index at once
    tmp.write_text(text)
    tmp.replace(path)


def _probe_all(
    root: Path, files: list[Path], cache: Path, *, max_pixels: int, progress: bool
) -> dict[str, Record]:
    """path -> record for `files`: from the cache when unchanged, else probed in parallel."""
    from tqdm import tqdm

    known = _load_cache(cache)
    stats = {str(f): f.stat() for f in files}
    records = {}
    todo = []
    for path, stat in stats.items():
        record = known.get(path)
        if _needs_probe(record, stat.st_size, stat.st_mtime_ns, max_pixels):
            todo.append(path)
        else:
            records[path] = record
    if not todo:
        return records
    print(
        f"folder dataset {root}: decoding {len(todo):,} new or changed image(s) of {len(files):,} "
        f"once, to skip unreadable ones before training (cached in {cache})",
        file=sys.stderr,
        flush=True,
    )
    workers = min(32, os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="Decoding images", unit=" files", disable=not progress)

    def probe(path: str) -> Record:
        stat = stats[path]
        return _probe(Path(path), stat.st_size, stat.st_mtime_ns, max_pixels)

    with ThreadPoolExecutor(workers) as pool, warnings.catch_warnings():
        from PIL import Image

        # Header reads only: the pixel limit below is ours, PIL's warning would be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for path, record in zip(todo, pool.map(probe, todo)):
            records[path] = record
            bar.update(1)
    bar.close()
    _write_atomically(cache, json.dumps({"version": _CACHE_VERSION, "files": {**known, **records}}))
    return records


# --- the index ------------------------------------------------------------------------------------


def _report(root: Path, skipped: list[tuple[str, str]], total: int, cache: Path) -> None:
    """One warning with the count and the first paths; the full list goes next to the cache."""
    if not skipped:
        return
    listing = cache.with_suffix(".skipped.txt")
    _write_atomically(listing, "".join(f"{path}\t{reason}\n" for path, reason in skipped))
    lines = [f"  {path}: {reason}" for path, reason in skipped[:_MAX_LISTED]]
    if len(skipped) > _MAX_LISTED:
        lines.append(f"  ... and {len(skipped) - _MAX_LISTED} more")
    warnings.warn(
        f"folder dataset {root}: skipped {len(skipped)} of {total} entries (all listed in "
        f"{listing}):\n" + "\n".join(lines),
        stacklevel=3,
    )


def list_images(path: str, split: str = "train") -> tuple[list[str], list[int]]:
    """``(paths, labels)`` of one split by file name only: no decoding, no TensorFlow.

    For loaders that decode the files themselves (torchvision's, on machines without
    TensorFlow): the same layout rules, class order and labels as :func:`index_folder`, but
    files that would not decode or exceed ``data.max_image_pixels`` are not filtered out.

    Raises:
      FolderDatasetError: no such folder or split, or no class folders.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FolderDatasetError(f"folder dataset {path!r}: no such directory ({root})")
    listing = _list_files(root, [])
    class_names = _check_layout(root, listing)
    if split not in listing:
        raise FolderDatasetError(f"folder dataset {root} has no {split!r} split")
    paths, labels = [], []
    for label, cls in enumerate(class_names):
        files = listing[split].get(cls, [])
        paths += [str(f) for f in files]
        labels += [label] * len(files)
    return paths, labels


def stratified_order(labels: list[int], *, seed: int) -> np.ndarray:
    """A fixed shuffle (as tfds does when preparing) in which every class is spread evenly: the
    ``k``-th of a class's ``n`` images (in a seeded random order) sits at fraction ``(k + 0.5) /
    n`` of the whole. So a slice such as ``train[90%:]`` holds about a tenth of every class,
    where a plain shuffle could leave a small class with no held-out (or no training) image."""
    labels_arr = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels_arr))
    for label in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == label)
        members = members[rng.permutation(len(members))]
        keys[members] = (np.arange(len(members)) + 0.5) / len(members)
    tie_break = rng.random(len(labels_arr))
    return np.lexsort((tie_break, keys))


def index_folder(
    path: str, *, max_pixels: int, data_dir: str | None = None, progress: bool = True
) -> FolderIndex:
    """Lists, decodes once and indexes the images under `path` (see the module docstring).

    Args:
      path: the folder.
      max_pixels: images with more pixels are skipped (config: data.max_image_pixels).
      data_dir: where the per-file cache lives (default ~/tensorflow_datasets).
      progress: show a progress bar while decoding.

    Raises:
      FolderDatasetError: no such folder, no class folders, eval classes missing from train/, or
        a train class without a readable image.
    """
    if max_pixels < 1:
        raise FolderDatasetError(f"data.max_image_pixels must be >= 1, got {max_pixels}")
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FolderDatasetError(f"folder dataset {path!r}: no such directory ({root})")
    skipped: list[tuple[str, str]] = []
    listing = _list_files(root, skipped)
    class_names = _check_layout(root, listing)
    candidates = [f for classes in listing.values() for files in classes.values() for f in files]
    total = len(candidates) + len(skipped)
    cache = _cache_file(root, data_dir)
    records = _probe_all(root, candidates, cache, max_pixels=max_pixels, progress=progress)
    files, formats = {}, set()
    kept_train: dict[str, list] = {}
    for split, classes in listing.items():
        paths, labels = [], []
        for label, cls in enumerate(class_names):
            kept = []
            for file in classes.get(cls, []):
                reason = _skip_reason(records[str(file)], max_pixels)
                if reason is None:
                    kept.append(str(file))
                    formats.add(records[str(file)][2])
                else:
                    skipped.append((str(file), reason))
            if split == "train":
                kept_train[cls] = kept
            elif cls in classes and not kept:
                skipped.append((str(root / split / cls), "class folder without a readable image"))
            paths += kept
            labels += [label] * len(kept)
        order = stratified_order(labels, seed=0)
        files[split] = (tuple(paths[i] for i in order), tuple(labels[i] for i in order))
    _report(root, skipped, total, cache)
    _refuse_empty_classes(root, kept_train, after=" once the skipped files are left out")
    jpeg_only = bool(formats) and formats <= {"JPEG", "MPO"}
    return FolderIndex(str(root), class_names, files, tuple(skipped), jpeg_only)
