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


def test_a_first_digits_run_logs_no_variant_folder_warning(tmp_path, caplog):
    """tfds's ``is_prepared`` warns "Variant folder .../1.0.0 has no dataset_info.json" on any
    set not prepared yet; on a first run that is expected (it is prepared next), not a fault."""
    config = types.SimpleNamespace(name="digits/16", data_dir=str(tmp_path))
    datasets._get_source_cached.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            datasets.get_source(config)
    finally:
        datasets._get_source_cached.cache_clear()
    assert not [r for r in caplog.records if "Variant folder" in r.getMessage()], caplog.text
