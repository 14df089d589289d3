"""The device peak table: device_kind strings as JAX reports them map to the right figures."""

import pytest

from cnn_flax.perf import peaks


@pytest.mark.parametrize(
    ("kind", "dtype", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4),
        ("NVIDIA H100 PCIe", "bfloat16", 756.0),
        ("NVIDIA H200", "float32", 494.7),
        ("NVIDIA A100-SXM4-40GB", "bfloat16", 312.0),
        ("Tesla V100-SXM2-16GB", "bfloat16", 15.7),
        ("NVIDIA L4", "bfloat16", 121.0),
        ("TPU v4", "bfloat16", 275.0),
        ("TPU v5 lite", "bfloat16", 197.0),
        ("TPU v5", "bfloat16", 459.0),
        ("NVIDIA H100 80GB HBM3", "float16", 989.4),
        ("Tesla V100-SXM2-16GB", "float16", 125.0),
    ],
)
def test_known_devices(kind, dtype, tflops):
    assert peaks.peak_flops(kind, dtype) == pytest.approx(tflops * 1e12)


def test_cpu_has_no_peak():
    assert peaks.peak_flops("cpu", "float32") is None


def test_tpus_have_no_float16_peak():
    assert peaks.peak_flops("TPU v4", "float16") is None


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="float64"):
        peaks.peak_flops("NVIDIA H100 80GB HBM3", "float64")
