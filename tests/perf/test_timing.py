"""Timing windows: the right number of steps, one call (one sync) per window."""

import pytest

from cnn_flax.perf import timing


def test_windows_split_the_steps_after_warmup():
    calls = []
    seconds = timing.time_windows(calls.append, steps=20, windows=5, warmup=3)
    assert calls == [3, 4, 4, 4, 4, 4]
    assert len(seconds) == 5 and all(s >= 0 for s in seconds)


def test_steps_must_divide_into_windows():
    with pytest.raises(ValueError, match="multiple of --windows"):
        timing.time_windows(lambda n: None, steps=10, windows=3, warmup=0)
