"""A user's image folder as a dataset: `folder:<path>`, one sub-folder per class.

Layouts (class names = sub-folder names, sorted; label = index):
  <path>/<class>/<image>                   one split, "train"
  <path>/<split>/<class>/<image>           used when <path>/train exists; e.g. train/ and val/
Splits can be sliced like tfds splits: "train[:90%]", "train[90%:]", "val[:1000]".

Like tfds.ImageFolder, the images stay as files and are read directly (no copy). Unlike it,
every file is checked once when the dataset is prepared (PIL header verification, with a progress
bar): a corrupt or non-image file is skipped with a warning naming its path, so it can never
crash an epoch halfway. The check is cached in <data_dir>/cnn_flax_folder_index/ and redone when
any file's name, size or modification time changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# Formats tf.io.decode_image reads.
_TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "MPO")
_SPLIT_NAMES = ("train", "val", "validation", "test")
_MAX_LISTED = 20
_INDEX_VERSION = 2


@dataclasses.dataclass(frozen=True)
class FolderIndex:
    """The validated files of an image folder."""

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


def _class_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_files(root: Path) -> dict[str, dict[str, list[Path]]]:
    """split -> class -> files (sorted)."""
    split_dirs = {name: root / name for name in _SPLIT_NAMES if (root / name).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"train": root}
    listing = {}
    for split, directory in split_dirs.items():
        listing[split] = {
            cls.name: sorted(p for p in cls.rglob("*") if p.is_file())
            for cls in _class_dirs(directory)
        }
    return listing


def _check(path: Path) -> tuple[str | None, str | None]:
    """(format, None) if TF can decode `path`, else (None, the reason why not)."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return None, f"not an image file name (extensions: {', '.join(IMAGE_EXTENSIONS)})"
    from PIL import Image

    try:
        with Image.open(path) as image:
            fmt = image.format
            image.verify()
    except Exception as error:  # PIL raises many types for bad files  # noqa: BLE001
        return None, f"cannot be decoded ({type(error).__name__}: {error})"
    if fmt not in _TF_FORMATS:
        return None, f"format {fmt} is not readable by tf.io.decode_image"
    return fmt, None


def _signature(listing: dict[str, dict[str, list[Path]]]) -> str:
    digest = hashlib.sha1(str(_INDEX_VERSION).encode())
    for split in sorted(listing):
        for cls in sorted(listing[split]):
            for path in listing[split][cls]:
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_file(root: Path, data_dir: str | None) -> Path:
    base = Path(data_dir or os.path.expanduser("~/tensorflow_datasets"))
    key = hashlib.sha1(str(root).encode()).hexdigest()[:16]
    return base / "cnn_flax_folder_index" / f"{root.name}-{key}.json"


def _warn_skipped(root: Path, skipped: list[tuple[str, str]], total: int) -> None:
    if not skipped:
        return
    lines = [f"  {path}: {reason}" for path, reason in skipped[:_MAX_LISTED]]
    if len(skipped) > _MAX_LISTED:
        lines.append(f"  ... and {len(skipped) - _MAX_LISTED} more")
    warnings.warn(
        f"folder dataset {root}: skipped {len(skipped)} of {total} files that are not readable "
        "images:\n" + "\n".join(lines),
        stacklevel=3,
    )


def index_folder(path: str, *, data_dir: str | None = None, progress: bool = True) -> FolderIndex:
    """Lists and validates the images under `path` (see module docstring)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"folder dataset {path!r}: no such directory ({root})")
    listing = _list_files(root)
    class_names = tuple(sorted(listing["train"]))
    if not class_names:
        raise ValueError(
            f"folder dataset {root} has no class sub-folders; expected <path>/<class>/<image> or "
            "<path>/train/<class>/<image>"
        )
    for split, classes in listing.items():
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise ValueError(
                f"folder dataset {root}: classes {unknown} of split {split!r} are not in train/"
            )
    total = sum(len(files) for classes in listing.values() for files in classes.values())
    signature = _signature(listing)
    cache = _cache_file(root, data_dir)
    if cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("signature") == signature:
            index = _from_json(stored)
            _warn_skipped(root, list(index.skipped), total)
            return index
    index = _validate(root, listing, class_names, total, progress=progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"signature": signature, **dataclasses.asdict(index)}))
    tmp.replace(cache)
    _warn_skipped(root, list(index.skipped), total)
    return index


def _validate(root: Path, listing, class_names, total: int, *, progress: bool) -> FolderIndex:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"Checking images in {root}", unit=" files", disable=not progress)
    files, skipped, formats = {}, [], set()
    for split, classes in listing.items():
        paths, labels = [], []
        for label, cls in enumerate(class_names):
            for file in classes.get(cls, []):
                fmt, reason = _check(file)
                if reason is None:
                    formats.add(fmt)
                    paths.append(str(file))
                    labels.append(label)
                else:
                    skipped.append((str(file), reason))
                bar.update(1)
        # A fixed shuffle (as tfds does when preparing) so that slices such as "train[90%:]"
        # hold every class, not the last ones.
        order = np.random.default_rng(0).permutation(len(paths))
        files[split] = (tuple(paths[i] for i in order), tuple(labels[i] for i in order))
    bar.close()
    jpeg_only = bool(formats) and formats <= {"JPEG", "MPO"}
    return FolderIndex(str(root), tuple(class_names), files, tuple(skipped), jpeg_only)


def _from_json(stored: dict) -> FolderIndex:
    files = {k: (tuple(v[0]), tuple(v[1])) for k, v in stored["files"].items()}
    skipped = tuple((p, r) for p, r in stored["skipped"])
    return FolderIndex(
        stored["root"], tuple(stored["class_names"]), files, skipped, stored["jpeg_only"]
    )
