"""The trainer's MFU and the benchmark's agree: one peak table, the run's compute dtype."""

from __future__ import annotations

import pytest

from cnn_flax import configs
from cnn_flax.perf import jax_bench, peaks
from cnn_flax.training import trainer
from cnn_flax.training.run_plan import make_run_plan

FLOPS = 3.2e12  # one device, one step
STEP_S = 0.125
STEPS = 8


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize(
    "device_kind",
    ["NVIDIA H100 80GB HBM3", "Tesla V100-SXM2-16GB", "TPU v3", "NVIDIA A100-SXM4-40GB"],
)
def test_trainer_and_benchmark_report_the_same_mfu(device_kind, dtype):
    config = configs.get_config("quickstart")
    config.dtype = dtype
    plan = make_run_plan(config, num_train=1437)
    meter = trainer.throughput_meter(
        config, plan, device_kind=device_kind, num_devices=1, flops_per_device_step=FLOPS
    )
    trained = meter.scalars(steps=STEPS, seconds=STEPS * STEP_S)
    if dtype == "float16" and device_kind.startswith("TPU"):
        assert "mfu" not in trained  # no float16 matrix unit: achieved FLOP/s only
        assert trained["gflops_per_s"] == pytest.approx(FLOPS / STEP_S / 1e9)
        return
    achieved, benchmarked = jax_bench.utilisation(
        FLOPS, STEP_S, device_kind=device_kind, dtype=dtype
    )
    assert trained["mfu"] == pytest.approx(benchmarked, rel=1e-12)
    assert trained["gflops_per_s"] == pytest.approx(achieved / 1e9, rel=1e-12)
    assert benchmarked == pytest.approx(FLOPS / STEP_S / peaks.peak_flops(device_kind, dtype))


def test_the_dtype_column_matters():
    """Where float32 and bfloat16 peaks differ, a side that ignored the dtype would disagree."""
    mfu = {}
    for dtype in ("float32", "bfloat16"):
        config = configs.get_config("quickstart")
        config.dtype = dtype
        meter = trainer.throughput_meter(
            config,
            make_run_plan(config, num_train=1437),
            device_kind="NVIDIA H100 80GB HBM3",
            num_devices=1,
            flops_per_device_step=FLOPS,
        )
        mfu[dtype] = meter.scalars(steps=1, seconds=STEP_S)["mfu"]
    assert mfu["float32"] == pytest.approx(2 * mfu["bfloat16"], rel=1e-3)


def test_no_peak_on_cpu():
    config = configs.get_config("quickstart")
    meter = trainer.throughput_meter(
        config,
        make_run_plan(config, num_train=1437),
        device_kind="cpu",
        num_devices=2,
        flops_per_device_step=FLOPS,
    )
    scalars = meter.scalars(steps=2, seconds=1.0)
    assert "mfu" not in scalars and scalars["gflops_per_s"] == pytest.approx(2 * 2 * FLOPS / 1e9)
    assert scalars["img_per_s"] == pytest.approx(2 * 32)
