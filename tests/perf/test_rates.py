"""The benchmark's arithmetic, checked with hand-computed numbers."""

import pytest

from cnn_flax.perf import rates


def test_step_time_is_median_of_window_means():
    # windows of 4 steps: 0.4 s, 0.8 s (outlier), 0.44 s -> means 0.1, 0.2, 0.11 -> median 0.11
    assert rates.step_time([0.4, 0.8, 0.44], 4) == pytest.approx(0.11)


@pytest.mark.parametrize(("windows", "steps"), [([], 4), ([1.0], 0)])
def test_step_time_rejects_empty_input(windows, steps):
    with pytest.raises(ValueError, match="timing window"):
        rates.step_time(windows, steps)


def test_images_per_second():
    assert rates.images_per_second(256, 0.25) == pytest.approx(1024.0)


def test_model_flops_per_step_counts_training_as_three_forwards():
    assert rates.model_flops_per_step(8e9, batch_size=10, mode="infer") == pytest.approx(8e10)
    assert rates.model_flops_per_step(8e9, batch_size=10, mode="train") == pytest.approx(2.4e11)
    with pytest.raises(ValueError, match="'eval'"):
        rates.model_flops_per_step(8e9, batch_size=10, mode="eval")


def test_mfu_and_achieved_rate():
    # ResNet-50-like: 3 x 8 GFLOPs x 256 images = 6.144 TFLOPs per step in 20 ms on a 989.4
    # TFLOP/s chip: 307.2 TFLOP/s achieved, 31.05% MFU.
    step_flops = rates.model_flops_per_step(8e9, batch_size=256, mode="train")
    assert rates.achieved_flops_per_second(step_flops, 0.02) == pytest.approx(307.2e12)
    assert rates.mfu(step_flops, 0.02, 989.4e12) == pytest.approx(307.2 / 989.4)
    assert rates.mfu(step_flops, 0.02, None) is None
