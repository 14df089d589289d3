"""Preparing the offline digits set prints nothing of tfds' download chatter."""

from __future__ import annotations

import types

from cnn_flax.data import datasets


def test_preparing_digits_is_quiet(tmp_path, capfd):
    config = types.SimpleNamespace(name="digits/16", data_dir=str(tmp_path))
    datasets._get_source_cached.cache_clear()
    try:
        source = datasets.get_source(config)
    finally:
        datasets._get_source_cached.cache_clear()
    assert source.split_size("test") == 360  # prepared, really
    out, err = capfd.readouterr()
    assert "Downloading and preparing" not in out, out
    assert "Generating splits" not in err, err
