"""Split sizes without reading a record: the prepared data set's metadata, else the published."""

from __future__ import annotations

from cnn_flax.data import datasets
from tests.data.conftest import data_config


def test_prepared_metadata_gives_the_sizes_reading_gives(digits_dir):
    config = data_config("digits", digits_dir)
    info, where = datasets.sizes_without_reading(config)
    assert info == datasets.get_dataset_info(config)  # which counts what it reads
    assert "metadata" in where


def test_unprepared_imagenet_uses_the_published_sizes(tmp_path):
    config = data_config("imagenet2012", str(tmp_path))
    info, where = datasets.sizes_without_reading(config)
    assert (info.num_classes, info.num_train, info.num_eval) == (1000, 1_281_167, 50_000)
    assert "published" in where
