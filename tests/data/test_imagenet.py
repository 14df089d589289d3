"""The ImageNet path: not-prepared error, tfds.testing.mock_data, and a miniature ImageNet
prepared by the real tfds imagenet2012 builder from the manual-download archives.

Runtime: ~2 s each, the real-builder test ~10-20 s (marked slow).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnn_flax.data import datasets, pipeline
from tests.data import mini_imagenet
from tests.data.conftest import data_config


def _tfds_file(name: str) -> list[str]:
    path = tfds.core.tfds_path(f"datasets/imagenet2012/{name}")
    return path.read_text().split()


def test_unprepared_imagenet_names_the_manual_files_and_the_command(tmp_path):
    config = data_config("imagenet2012", str(tmp_path))
    with pytest.raises(datasets.DatasetNotPreparedError) as error:
        datasets.get_dataset_info(config)
    message = str(error.value)
    manual = tmp_path / "downloads" / "manual"
    assert f"{manual}/ILSVRC2012_img_train.tar" in message
    assert f"{manual}/ILSVRC2012_img_val.tar" in message
    assert "python -m cnn_flax.data.prepare imagenet2012" in message
    assert "tfds build imagenet2012" in message


def test_unknown_dataset_lists_the_supported_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*imagenet2012.*folder:"):
        datasets.get_dataset_info(data_config("imagenet", str(tmp_path)))


@pytest.mark.parametrize("name,num_classes", [("imagenet2012", 1000), ("cifar10", 10)])
def test_mocked_tfds_datasets_flow_through_the_pipeline(name, num_classes, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_is_prepared", lambda builder: True)
    datasets._get_source_cached.cache_clear()
    augment = {"inception_crop": True, "flip": True, "pad_crop": name == "cifar10"}
    config = data_config(name, str(tmp_path), augment=augment)
    try:
        with tfds.testing.mock_data(num_examples=12):
            info = datasets.get_dataset_info(config)
            assert info == (num_classes, 12, 12)
            stream = iter(pipeline.TrainStream(config, global_batch_size=8, seed=0))
            for _ in range(3):  # crosses an epoch boundary
                batch = next(stream)
                assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
                assert ((batch["label"] >= 0) & (batch["label"] < num_classes)).all()
            evals = list(pipeline.eval_dataset(config, global_batch_size=8).as_numpy_iterator())
            assert [int(b["mask"].sum()) for b in evals] == [8, 4]
    finally:
        datasets._get_source_cached.cache_clear()


@pytest.mark.slow
def test_real_imagenet_builder_on_a_miniature_manual_download(tmp_path):
    from cnn_flax.data.prepare import prepare

    synsets = _tfds_file("labels.txt")
    manual = tmp_path / "manual"
    mini_imagenet.write_manual_dir(manual, synsets)
    data_dir = str(tmp_path / "tfds")
    prepare("imagenet2012", data_dir=data_dir, manual_dir=str(manual))
    datasets._get_source_cached.cache_clear()
    config = data_config("imagenet2012", data_dir, image_size=24, augment={"inception_crop": True})
    info = datasets.get_dataset_info(config)
    num_train = len(mini_imagenet.SYNSET_LINES) * mini_imagenet.PER_CLASS
    assert info == (1000, num_train, mini_imagenet.NUM_VAL)

    # Validation: image i (identified by its grey level) has the label of line i of the
    # builder's validation labels file.
    val_synsets = _tfds_file("validation_labels.txt")
    seen = set()
    for batch in pipeline.eval_dataset(config, global_batch_size=4).as_numpy_iterator():
        for image, label, mask in zip(batch["image"], batch["label"], batch["mask"]):
            if not mask:
                continue
            index = int(round((image.mean() - 20) / 35))
            assert abs(image.mean() - mini_imagenet.val_level(index)) < 4
            assert synsets[label] == val_synsets[index - 1], index
            seen.add(index)
    assert seen == set(range(1, mini_imagenet.NUM_VAL + 1))

    # Train: each class's grey level comes with that synset's label, across epochs.
    stream = iter(pipeline.TrainStream(config, global_batch_size=4, seed=1))
    labels = []
    for _ in range(6):
        batch = next(stream)
        for image, label in zip(batch["image"], batch["label"]):
            position = int(round((image.mean() - 40) / 80))
            assert abs(image.mean() - mini_imagenet.class_level(position)) < 4
            assert label == mini_imagenet.SYNSET_LINES[position]
            labels.append(int(label))
    assert sorted(set(labels)) == list(mini_imagenet.SYNSET_LINES)
