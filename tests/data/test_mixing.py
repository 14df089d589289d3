"""On-device normalisation and mixup / CutMix (JAX only). Runtime ~2 s."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.data import IMAGENET_MEAN, IMAGENET_STD, mixup_cutmix, normalize


def test_normalize_matches_torchvision_convention():
    images = jnp.array([[[[0, 128, 255]]]], jnp.uint8)
    expected = (np.array([0, 128, 255]) / 255 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225]
    )
    chex.assert_trees_all_close(normalize(images)[0, 0, 0], expected.astype(np.float32), atol=1e-5)
    assert normalize(images, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    out = normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert out.dtype == jnp.float32


def _batch():
    images = jnp.concatenate([jnp.zeros((2, 16, 16, 3)), jnp.ones((2, 16, 16, 3))])
    labels = jax.nn.one_hot(jnp.array([0, 0, 1, 1]), 2)
    return images, labels


def test_soft_labels_match_the_mixed_pixels():
    # Both on: each batch picks mixup or CutMix, so 16 keys exercise both (one compile).
    mixup, cutmix = 0.8, 1.0
    images, labels = _batch()

    def summary(key):
        mixed, soft = mixup_cutmix(key, images, labels, mixup_alpha=mixup, cutmix_alpha=cutmix)
        return mixed[0].mean(), soft

    keys = jax.random.split(jax.random.key(0), 16)
    pixel_share, soft = jax.device_get(jax.jit(jax.vmap(summary))(keys))
    chex.assert_trees_all_close(soft.sum(-1), np.ones((16, 4)), atol=1e-6)
    # Example 0 (zeros) is mixed with example 3 (ones): its mean pixel is the share of
    # example 3, which must equal its soft label for class 1.
    chex.assert_trees_all_close(pixel_share, soft[:, 0, 1], atol=1e-5)
    lams = soft[:, 0, 0]
    assert len(set(np.round(lams, 4))) > 8 and lams.min() >= 0 and lams.max() <= 1


def test_no_mixing_is_the_identity():
    images, labels = _batch()
    out, soft = mixup_cutmix(jax.random.key(0), images, labels, mixup_alpha=0.0, cutmix_alpha=0.0)
    assert out is images and soft is labels
    with pytest.raises(ValueError, match="alphas must be >= 0"):
        mixup_cutmix(jax.random.key(0), images, labels, mixup_alpha=-1.0, cutmix_alpha=0.0)


def test_beta_sampler_moments():
    from cnn_flax.data.mixing import sample_beta

    alphas = (0.2, 2.5)  # below 1 (boosted) and above 1: both branches of the sampler
    keys = jax.random.split(jax.random.key(1), 20_000)
    samples = jax.jit(jax.vmap(lambda k: [sample_beta(k, a) for a in alphas]))(keys)
    for alpha, lam in zip(alphas, map(np.asarray, samples)):
        assert np.isfinite(lam).all() and lam.min() >= 0 and lam.max() <= 1
        assert abs(lam.mean() - 0.5) < 0.01
        assert abs(lam.var() - 1 / (4 * (2 * alpha + 1))) < 0.005  # Beta(a, a) variance
