"""Cross-entropy with label smoothing and top-k counts, as exact (sum, count) pairs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.training import losses

LOGITS = np.array([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 1.0], [1.0, 1.0, 4.0, 0.0]], np.float32)
LABELS = np.array([0, 2, 3])


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_hand_computation(smoothing):
    targets = np.eye(4)[LABELS] * (1 - smoothing) + smoothing / 4
    expected = -(targets * _log_softmax(LOGITS.astype(np.float64))).sum(-1)
    total, count = losses.cross_entropy(
        jnp.asarray(LOGITS), jnp.asarray(LABELS), label_smoothing=smoothing
    )
    np.testing.assert_allclose(float(total), expected.sum(), rtol=1e-6)
    assert float(count) == 3
    # Soft labels (mixup) take the same path; bfloat16 logits are computed in float32.
    soft_total, _ = losses.cross_entropy(
        jnp.asarray(LOGITS, jnp.bfloat16), jnp.eye(4)[LABELS], label_smoothing=smoothing
    )
    assert soft_total.dtype == jnp.float32
    np.testing.assert_allclose(float(soft_total), expected.sum(), rtol=1e-6)


def test_cross_entropy_mask_is_exact_over_padding():
    mask = jnp.array([True, False, True])
    total, count = losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS), mask=mask)
    expected = -_log_softmax(LOGITS.astype(np.float64))[[0, 2], LABELS[[0, 2]]].sum()
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)
    assert float(count) == 2
    with pytest.raises(ValueError, match="labels have shape"):
        losses.cross_entropy(jnp.asarray(LOGITS), jnp.ones((3, 5)))


def test_topk_correct_breaks_ties_by_index_and_refuses_nan():
    # A constant classifier (ViT's zero-initialised head) is right only for class 0.
    labels = jnp.array([0, 1, 2, 3, 0])
    constant = jnp.zeros((5, 4))
    assert [float(v) for v in losses.topk_correct(constant, labels, k=1)] == [2, 5]
    assert [float(v) for v in losses.topk_correct(constant, labels, k=2)] == [3, 5]
    assert int(jnp.sum(jnp.argmax(constant, -1) == labels)) == 2  # what argmax would say
    nan = constant.at[:, 1].set(jnp.nan)
    assert [float(v) for v in losses.topk_correct(nan, labels, k=4)] == [0, 5]


def test_topk_correct_with_mask():
    # Ranks of the labels: example 0 -> 1st, example 1 -> 2nd (its tie counts), 2 -> 4th.
    logits, labels = jnp.asarray(LOGITS), jnp.asarray(LABELS)
    assert [float(v) for v in losses.topk_correct(logits, labels, k=1)] == [1, 3]
    assert [float(v) for v in losses.topk_correct(logits, labels, k=2)] == [2, 3]
    assert [float(v) for v in losses.topk_correct(logits, labels, k=4)] == [3, 3]
    mask = jnp.array([False, True, True])
    assert [float(v) for v in losses.topk_correct(logits, labels, k=2, mask=mask)] == [1, 2]
    soft = jnp.eye(4)[labels]
    assert [float(v) for v in losses.topk_correct(logits, soft, k=1, mask=mask)] == [0, 2]
    with pytest.raises(ValueError, match="k=5"):
        losses.topk_correct(logits, labels, k=5)
