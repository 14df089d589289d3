"""folder:<path> datasets: layouts, split slices, and unreadable files reported by path.

Runtime ~3 s.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cnn_flax.data import datasets, pipeline
from cnn_flax.data.builders.folder import index_folder
from tests.data.conftest import data_config


def test_split_layout_classes_and_slices(jpeg_folder, tmp_path):
    index = index_folder(jpeg_folder, data_dir=str(tmp_path), progress=False)
    assert index.class_names == ("c0", "c1", "c2")
    assert index.default_splits == ("train", "val")
    paths, labels = index.split("train")
    assert len(paths) == 21 and sorted(labels) == sorted([0, 1, 2] * 7)
    assert all(f"/c{label}/" in path for path, label in zip(paths, labels))
    assert len(index.split("train[:50%]")[0]) + len(index.split("train[50%:]")[0]) == 21
    assert index.split("val[1:3]")[0] == index.split("val")[0][1:3]
    assert not index.jpeg_only  # one PNG among the JPEGs
    with pytest.raises(ValueError, match="'test' is not in folder dataset"):
        index.split("test")


def test_unreadable_files_are_skipped_with_a_warning_naming_them(jpeg_folder, tmp_path):
    root = tmp_path / "images"
    shutil.copytree(f"{jpeg_folder}/train", root)  # flat layout: root/<class>/<image>
    corrupt = root / "c1" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    notes = root / "c2" / "notes.txt"
    notes.write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2 of 23 files") as record:
        index = index_folder(str(root), data_dir=str(tmp_path), progress=False)
    message = str(record[0].message)
    assert str(corrupt) in message and str(notes) in message
    assert index.default_splits == ("train[:90%]", "train[90%:]")
    assert len(index.split("train")[0]) == 21
    # The cached index reports them again, and an epoch reads through without error.
    with pytest.warns(UserWarning, match=str(corrupt)):
        index_folder(str(root), data_dir=str(tmp_path), progress=False)
    config = data_config(f"folder:{root}", str(tmp_path), train_split="train")
    datasets._get_source_cached.cache_clear()
    with pytest.warns(UserWarning):
        stream = iter(pipeline.TrainStream(config, global_batch_size=7, seed=0))
    labels = np.concatenate([next(stream)["label"] for _ in range(3)])
    assert sorted(labels) == sorted([0, 1, 2] * 7)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        index_folder(str(tmp_path / "nope"))
