"""folder:<path> data sets: layouts, split slices, every file decoded once at index time (bad
ones named and skipped), hidden/non-image files, empty class folders, the pixel limit, the cache.

Runtime ~6 s.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from cnn_flax.data import datasets, pipeline
from cnn_flax.data.builders import folder
from cnn_flax.data.builders.folder import FolderDatasetError, index_folder
from tests.data.conftest import data_config

LIMIT = 10_000  # pixels; the fixture's images have at most 80 x 80 = 6,400


def _index(root, data_dir, **kw):
    return index_folder(str(root), max_pixels=kw.pop("max_pixels", LIMIT), data_dir=str(data_dir))


def _flat_copy(jpeg_folder, tmp_path):
    root = tmp_path / "images"
    shutil.copytree(f"{jpeg_folder}/train", root)  # flat layout: root/<class>/<image>
    return root


def test_split_layout_classes_and_slices(jpeg_folder, tmp_path):
    index = _index(jpeg_folder, tmp_path)
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


def test_a_truncated_jpeg_is_named_and_skipped_before_training(jpeg_folder, tmp_path, capsys):
    """Issue 12.2: PIL's verify() passes a truncated JPEG, which then killed training at step 0
    with `jpeg::Uncompress failed` and no path. Decoding every file at index time catches it."""
    root = _flat_copy(jpeg_folder, tmp_path)
    good = (root / "c1" / "1.jpeg").read_bytes()
    truncated = root / "c1" / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    with Image.open(truncated) as image:
        image.verify()  # the old check passes it
    garbage = root / "c1" / "broken.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    with pytest.warns(UserWarning, match="skipped 2 of 23 entries") as record:
        index = _index(root, tmp_path)
    message = str(record[0].message)
    assert f"{truncated}: cannot be decoded (jpeg::Uncompress failed" in message
    assert str(garbage) in message
    assert "decoding 23 new or changed image(s) of 23" in capsys.readouterr().err
    listing = (tmp_path / "cnn_flax_folder_index").glob("*.skipped.txt")
    assert str(truncated) in next(listing).read_text()
    assert len(index.split("train")[0]) == 21
    # An epoch reads through: the truncated file is never drawn.
    config = data_config(f"folder:{root}", str(tmp_path), train_split="train")
    config.max_image_pixels = LIMIT
    datasets._get_source_cached.cache_clear()
    with pytest.warns(UserWarning, match="skipped 2"):
        stream = iter(pipeline.TrainStream(config, global_batch_size=7, seed=0))
    labels = np.concatenate([next(stream)["label"] for _ in range(3)])
    assert sorted(labels) == sorted([0, 1, 2] * 7)


def test_hidden_non_image_and_loose_files_are_skipped_and_reported(jpeg_folder, tmp_path):
    root = _flat_copy(jpeg_folder, tmp_path)
    shutil.copy(root / "c0" / "1.jpeg", root / "c0" / ".hidden.jpg")
    (root / "c0" / ".ipynb_checkpoints").mkdir()
    shutil.copy(root / "c0" / "1.jpeg", root / "c0" / ".ipynb_checkpoints" / "1.jpeg")
    (root / ".git").mkdir()
    (root / "c2" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("not a class")
    with pytest.warns(UserWarning, match="skipped 5 of 26 entries") as record:
        index = _index(root, tmp_path)
    message = str(record[0].message)
    for path, reason in [
        (root / "c0" / ".hidden.jpg", "hidden"),
        (root / "c0" / ".ipynb_checkpoints" / "1.jpeg", "hidden"),
        (root / ".git", "hidden"),
        (root / "c2" / "notes.txt", "not an image file name"),
        (root / "README.md", "not inside a class folder"),
    ]:
        assert f"{path}: {reason}" in message
    assert index.class_names == ("c0", "c1", "c2") and len(index.split("train")[0]) == 21


def test_empty_train_class_is_refused_before_decoding(jpeg_folder, tmp_path, monkeypatch):
    """Issue 12.10: an empty class folder silently became a class the model cannot learn."""
    root = _flat_copy(jpeg_folder, tmp_path)
    (root / "c3_empty").mkdir()
    (root / "c4_notes").mkdir()
    (root / "c4_notes" / "notes.txt").write_text("only notes")
    monkeypatch.setattr(folder, "_probe", lambda *a: pytest.fail("decoded before refusing"))
    with pytest.raises(FolderDatasetError, match=r"2 train class folder\(s\) hold no readable"):
        _index(root, tmp_path)


def test_class_of_unreadable_files_is_refused_and_empty_eval_class_reported(tmp_path):
    root = tmp_path / "images"
    for split, cls in [("train", "a"), ("train", "b"), ("val", "a")]:
        (root / split / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / cls / "ok.png")
    (root / "train" / "b" / "ok.png").write_bytes(b"\x89PNG truncated")
    (root / "val" / "b").mkdir()
    refused = pytest.raises(FolderDatasetError, match="once the skipped files are left out: b")
    with pytest.warns(UserWarning, match="ok.png: not a readable image"), refused:
        _index(root, tmp_path)
    (root / "train" / "b" / "ok.png").unlink()
    Image.new("RGB", (8, 8)).save(root / "train" / "b" / "ok.png")
    with pytest.warns(UserWarning, match="skipped 1 of 3") as record:
        index = _index(root, tmp_path)
    assert f"{root / 'val' / 'b'}: class folder without a readable image" in str(record[0].message)
    assert len(index.split("val")[0]) == 1


def test_pixel_limit_skips_large_images_without_decoding_them(jpeg_folder, tmp_path, monkeypatch):
    root = _flat_copy(jpeg_folder, tmp_path)
    big = root / "c2" / "big.png"
    Image.new("RGB", (200, 100)).save(big)  # 20,000 pixels > LIMIT
    decoded = []
    real_probe = folder._probe

    def probe(path, *args):
        record = real_probe(path, *args)
        decoded.append(path.name) if record[-1] else None
        return record

    monkeypatch.setattr(folder, "_probe", probe)
    with pytest.warns(UserWarning, match="200x100 = 20,000 pixels, more than"):
        index = _index(root, tmp_path)
    assert str(big) not in index.split("train")[0] and "big.png" not in decoded
    assert len(decoded) == 21
    decoded.clear()  # a higher limit decodes the big image only; the rest comes from the cache
    index = _index(root, tmp_path, max_pixels=20_000)
    assert str(big) in index.split("train")[0] and decoded == ["big.png"]


def test_cache_decodes_only_new_or_changed_files(jpeg_folder, tmp_path, monkeypatch):
    root = _flat_copy(jpeg_folder, tmp_path)
    _index(root, tmp_path)
    probed = []
    real_probe = folder._probe
    monkeypatch.setattr(
        folder, "_probe", lambda path, *a: probed.append(path) or real_probe(path, *a)
    )
    first = _index(root, tmp_path)
    assert probed == []
    changed = root / "c0" / "2.jpeg"
    os.utime(changed, ns=(1, 1))
    assert _index(root, tmp_path) == first and probed == [changed]


def test_missing_folder_and_bad_limit_are_clear_errors(tmp_path):
    with pytest.raises(FolderDatasetError, match="no such directory"):
        _index(tmp_path / "nope", tmp_path)
    with pytest.raises(FolderDatasetError, match="max_image_pixels must be >= 1"):
        _index(tmp_path, tmp_path, max_pixels=0)


def test_list_images_names_the_indexed_files_without_tensorflow(jpeg_folder, tmp_path, monkeypatch):
    """For torchvision's loader on machines without TensorFlow: same files, same labels."""
    index = _index(jpeg_folder, tmp_path)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails
    for split in ("train", "val"):
        paths, labels = folder.list_images(str(jpeg_folder), split)
        assert sorted(zip(paths, labels)) == sorted(zip(*index.split(split)))
    with pytest.raises(FolderDatasetError, match="no 'test' split"):
        folder.list_images(str(jpeg_folder), "test")


def test_held_out_part_is_stratified():
    """Every class, however small, keeps about its share on each side of a 90% cut; a plain
    shuffle (the earlier order) left some class with no held-out image."""
    labels = [0] * 90 + [1] * 20 + [2] * 10
    order = folder.stratified_order(labels, seed=0)
    assert sorted(order) == list(range(120))
    held_out = [labels[i] for i in order[108:]]
    assert [held_out.count(c) for c in (0, 1, 2)] == [9, 2, 1], held_out


def test_a_recipe_eval_split_missing_from_a_flat_folder_holds_out_its_own(
    jpeg_folder, tmp_path, capsys
):
    """A recipe whose eval split is ``test`` on a folder with only class folders: the folder's
    stratified 10% instead of ``split 'test' is not in folder dataset``, said once."""
    root = _flat_copy(jpeg_folder, tmp_path)
    source = datasets.FileSource(_index(root, tmp_path))
    config = data_config(f"folder:{root}", str(tmp_path), eval_split="test", train_split="train")
    assert datasets.splits(config, source) == ("train[:90%]", "train[90%:]")
    assert datasets.splits(config, source) == ("train[:90%]", "train[90%:]")
    out = capsys.readouterr().out
    assert out.count("has no test/ sub-folder") == 1, out
    # 7 images a class, 2 held out in all: a class is left without one, and is named.
    assert "Too few images for both sides in class(es) c" in out, out


def test_held_out_part_is_recorded_and_said(jpeg_folder, tmp_path, capsys):
    """The hold-out a folder set makes of its own train images is said in one line (with no
    eval split configured too) and recorded: the splits, the seed, counts per class and the
    held-out files, which the trainer writes to the workdir's held_out.json."""
    root = _flat_copy(jpeg_folder, tmp_path)
    config = data_config(f"folder:{root}", str(tmp_path))  # the finetune recipe's: no eval split
    record = datasets.held_out_record(config)
    out = capsys.readouterr().out
    assert out.count("has no val/ or test/ sub-folder") == 1, out
    assert "held_out.json" in out, out
    assert record["train_split"] == "train[:90%]" and record["eval_split"] == "train[90%:]"
    assert "seed 0" in record["order"]
    assert sum(c["train"] + c["held_out"] for c in record["per_class"].values()) == 21
    assert len(record["held_out"]) == 2 and all(
        (root / path).is_file() and not os.path.isabs(path) for path in record["held_out"]
    )
    # A folder with a val/ sub-folder holds nothing out of train/: nothing to record.
    assert datasets.held_out_record(data_config(f"folder:{jpeg_folder}", str(tmp_path))) is None


def test_trainer_writes_held_out_json_next_to_config(jpeg_folder, tmp_path):
    import json

    import cnn_flax.data
    from cnn_flax.configs.base import get_base_config
    from cnn_flax.training import trainer

    root = _flat_copy(jpeg_folder, tmp_path)
    config = get_base_config()
    config.data = data_config(f"folder:{root}", str(tmp_path))
    workdir = tmp_path / "run"
    trainer._write_run_files(workdir, config, num_classes=3, data_source=cnn_flax.data)
    assert (workdir / "config.json").is_file()
    record = json.loads((workdir / "held_out.json").read_text())
    assert record["eval_split"] == "train[90%:]" and len(record["held_out"]) == 2
