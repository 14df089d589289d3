"""The real-data pass: its loaders' batches fit the steps they feed, and its verdict."""

import sys

import jax
import jax.numpy as jnp
import pytest

from cnn_flax.cli import benchmark
from cnn_flax.perf import real_data

TINY = ["--batch-size=2", "--resolution=32", "--steps=2", "--windows=1", "--warmup=1"]


def _result(wait_ms: float) -> real_data.RealDataResult:
    return real_data.RealDataResult(
        loader="cnn_flax",
        dataset="folder:x",
        steps=10,
        images_per_s=90.0,
        synthetic_images_per_s=100.0,
        wait_ms_per_step=wait_ms,
        step_ms=50.0,
    )


def test_waiting_over_a_tenth_of_the_step_is_input_bound():
    assert not _result(4.9).input_bound and _result(5.1).input_bound
    assert _result(1.0).fraction_of_synthetic == pytest.approx(0.9)
    assert "keeps up" in _result(1.0).describe()[1]
    assert "bottleneck" in _result(20.0).describe()[1]


def test_cnn_flax_loader_gives_the_trainer_step_uint8_batches(tiny_jpegs, tmp_path):
    pytest.importorskip("tensorflow")
    source = real_data.batches(
        "cnn_flax", f"folder:{tiny_jpegs}", data_dir=str(tmp_path), batch_size=4, resolution=32
    )
    (batch,) = next(source)
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == jnp.uint8
    assert batch["label"].shape == (4,) and batch["label"].dtype == jnp.int32


@pytest.mark.torch
def test_torch_loader_gives_the_minimal_step_normalised_nhwc_floats(
    tiny_jpegs, tmp_path, monkeypatch
):
    """Without TensorFlow, as on the GPU machine (``import tensorflow`` fails)."""
    pytest.importorskip("torchvision")
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    source = real_data.batches(
        "torch", f"folder:{tiny_jpegs}", data_dir=str(tmp_path), batch_size=4, resolution=32
    )
    images, labels = next(source)
    assert images.shape == (4, 32, 32, 3) and images.dtype == jnp.float32
    assert float(images.min()) < 0.0  # normalised, not [0, 1]
    assert labels.shape == (4,) and labels.dtype == jnp.int32


def test_check_refuses_a_missing_folder_and_a_tfds_name_for_torch(tmp_path):
    with pytest.raises(ValueError, match="is not a directory; make one with"):
        real_data.check("cnn_flax", f"folder:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="reads a folder:<path> dataset"):
        real_data.check("torch", "imagenet2012")
    with pytest.raises(ValueError, match="--data-loader='tf'"):
        real_data.check("tf", "folder:x")


@pytest.fixture
def restore_jax_cache_config():
    keys = ("jax_enable_compilation_cache", "jax_compilation_cache_dir")
    saved = {k: getattr(jax.config, k) for k in keys}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


def test_benchmark_real_data_pass_and_profile_trace(
    tiny_jpegs, tmp_path, capsys, restore_jax_cache_config
):
    pytest.importorskip("tensorflow")
    from cnn_flax.perf import profile

    args = [
        "--model=resnet20",
        "--compilation-cache-dir=",
        f"--data=folder:{tiny_jpegs}",
        f"--data-dir={tmp_path / 'index'}",
        f"--profile={tmp_path / 'trace'}",
        *TINY,
    ]
    assert benchmark.main(args) == 0
    out = capsys.readouterr().out
    real = [line for line in out.splitlines() if line.startswith("real data (cnn_flax loader")]
    assert len(real) == 1 and "img/s end to end" in real[0] and "% of synthetic" in real[0]
    assert "waiting for data:" in out
    summary = profile.summarize(str(tmp_path / "trace"), top=5)
    assert any("by kind:" in line for line in summary)
