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


def _torch_batch():
    rng = np.random.default_rng(0)
    images = rng.random((5, 12, 16, 3), dtype=np.float32)
    labels = np.array([0, 1, 2, 3, 1])
    return images, labels


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_pairs_boxes_and_labels_match_torchvision_given_the_same_draws(kind, monkeypatch):
    """torchvision.transforms.v2 MixUp / CutMix with their lam and box centre set to ours."""
    torch = pytest.importorskip("torch")
    v2 = pytest.importorskip("torchvision.transforms.v2")
    from cnn_flax.data.mixing import cutmix_box, mix_pair

    images, labels = _torch_batch()
    lam, r_x, r_y = 0.63, 13, 2  # a box clipped at the top and right borders
    transform = (v2.MixUp if kind == "mixup" else v2.CutMix)(alpha=1.0, num_classes=4)
    monkeypatch.setattr(transform, "_dist", type("Fixed", (), {"sample": lambda self, s: lam})())
    draws = iter([r_x, r_y])  # CutMix draws the x centre, then the y centre
    monkeypatch.setattr(torch, "randint", lambda high, size: torch.tensor([next(draws)]))
    theirs = transform(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels))
    monkeypatch.undo()
    onehot = jax.nn.one_hot(labels, 4)
    box = None
    if kind == "cutmix":
        box = cutmix_box(jnp.float32(lam), jnp.float32(r_y), jnp.float32(r_x), height=12, width=16)
    ours = mix_pair(jnp.asarray(images), onehot, jnp.float32(lam), box)
    chex.assert_trees_all_close(ours[0], theirs[0].permute(0, 2, 3, 1).numpy(), atol=1e-6)
    chex.assert_trees_all_close(ours[1], theirs[1].numpy(), atol=1e-6)


@pytest.mark.torch
def test_mixup_or_cutmix_is_chosen_per_batch_with_torchvisions_probability():
    v2 = pytest.importorskip("torchvision.transforms.v2")
    from cnn_flax.data.mixing import SWITCH_PROBABILITY

    choice = v2.RandomChoice([v2.MixUp(num_classes=2), v2.CutMix(num_classes=2)])
    assert choice.p == [1 - SWITCH_PROBABILITY, SWITCH_PROBABILITY]
    count = 1000
    images = jnp.arange(1.0, 5.0)[:, None, None, None] * jnp.ones((4, 64, 64, 1))
    labels = jax.nn.one_hot(jnp.arange(4) % 2, 2)

    def is_cutmix(key):  # mixup blends every pixel alike; CutMix pastes a box
        mixed, _ = mixup_cutmix(key, images, labels, mixup_alpha=0.2, cutmix_alpha=1.0)
        return mixed[0].max() > mixed[0].min()

    share = float(jax.jit(jax.vmap(is_cutmix))(jax.random.split(jax.random.key(2), count)).mean())
    assert abs(share - SWITCH_PROBABILITY) < 5 * (0.25 / count) ** 0.5


def test_augment_batch_reads_the_config_and_erases_before_mixing():
    from cnn_flax.configs.base import get_data_config
    from cnn_flax.data.mixing import augment_batch

    augment = get_data_config().augment
    images, labels = _batch()
    out = augment_batch(jax.random.key(0), images, labels, augment)
    assert out[0] is images and out[1] is labels  # everything off: untouched
    augment.random_erasing = 1.0
    erased, same = jax.jit(lambda x: augment_batch(jax.random.key(0), x, labels, augment))(
        images + 1.0
    )
    assert (np.asarray(erased) == 0).any(axis=(1, 2, 3)).all()
    chex.assert_trees_all_close(same, labels)
    augment.update(dict(mixup_alpha=0.2, cutmix_alpha=1.0))
    step = jax.jit(lambda key, x, y: augment_batch(key, x, y, augment))
    mixed, soft = step(jax.random.key(0), images + 1.0, labels)
    chex.assert_trees_all_close(soft.sum(-1), np.ones(4), atol=1e-6)
    assert not np.allclose(soft, labels)
