"""Random erasing against torchvision's RandomErasing: its box rule given the same uniform
draws, its probabilities and box distribution, and value 0 = the mean colour. Runtime ~4 s."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.data import erasing, normalize
from cnn_flax.data.mixing import IMAGENET_MEAN

torch = pytest.importorskip("torch")
transforms = pytest.importorskip("torchvision.transforms")
pytestmark = pytest.mark.torch


def _torchvision_box(monkeypatch, box_u, position_u, height, width):
    """RandomErasing.get_params reading our uniforms: uniform_(a, b) = a + (b - a) u in float32
    (attempt by attempt: area, then aspect), randint(lo, hi) = lo + floor(u (hi - lo))."""
    box_draws = iter(box_u.reshape(-1).tolist())
    position_draws = iter(position_u.tolist())

    def uniform_(tensor, a, b):
        u = np.float32(next(box_draws))
        return tensor.fill_(float(np.float32(a) + (np.float32(b) - np.float32(a)) * u))

    def randint(low, high, size):
        return torch.tensor([low + int(np.floor(next(position_draws) * (high - low)))])

    monkeypatch.setattr(torch.Tensor, "uniform_", uniform_)
    monkeypatch.setattr(torch, "randint", randint)
    image = torch.zeros(3, height, width)
    i, j, h, w, value = transforms.RandomErasing.get_params(
        image, scale=erasing.SCALE, ratio=erasing.RATIO, value=[0.0]
    )
    monkeypatch.undo()
    return (0, 0, 0, 0) if value is image else (i, j, h, w)  # no attempt fitted


@pytest.mark.parametrize("height,width", [(32, 32), (12, 40), (3, 40)])
def test_boxes_follow_torchvisions_rule_given_the_same_draws(height, width, monkeypatch):
    rng = np.random.default_rng(height)
    count = 300
    box_u = rng.random((count, erasing.ATTEMPTS, 2), dtype=np.float32)
    position_u = rng.random((count, 2), dtype=np.float32)
    ours = jax.jit(erasing.erasing_boxes, static_argnames=("height", "width"))(
        box_u, position_u, height=height, width=width
    )
    ours = np.stack([np.asarray(v) for v in ours], axis=1)
    theirs = np.array(
        [
            _torchvision_box(monkeypatch, box_u[k], position_u[k], height, width)
            for k in range(count)
        ]
    )
    np.testing.assert_array_equal(ours, theirs)
    if height == 3:  # a flat image: the no-fit branch (image left as is) is exercised too
        assert 0 < (theirs[:, 2] == 0).sum() < count


def test_probability_and_box_distribution_match_torchvision():
    """Fraction erased = p (on 12 x 40 images every draw fits a box); on flat 3 x 40 images the
    area fraction and the no-fit rate match torchvision's own sampler (torch's RNG) within 5
    standard errors."""
    count, p = 2000, 0.3
    images = jnp.ones((count, 12, 40, 1))
    erased = np.asarray(
        jax.jit(lambda k: erasing.random_erasing(k, images, probability=p))(jax.random.key(0))
    )
    rate = (erased == 0).reshape(count, -1).any(axis=1).mean()
    assert abs(rate - p) < 5 * (p * (1 - p) / count) ** 0.5
    height, width = 3, 40
    flat = jnp.ones((count, height, width, 1))
    full = np.asarray(
        jax.jit(lambda k: erasing.random_erasing(k, flat, probability=1.0))(jax.random.key(1))
    )
    ours = (full == 0).reshape(count, -1).sum(axis=1) / (height * width)
    torch.manual_seed(0)
    theirs = []
    for _ in range(count):
        _, _, h, w, _ = transforms.RandomErasing.get_params(
            torch.zeros(1, height, width), scale=erasing.SCALE, ratio=erasing.RATIO, value=[0.0]
        )
        theirs.append(0.0 if h == height else h * w / (height * width))  # h == H: none fitted
    theirs = np.array(theirs)
    standard_error = (ours.var() / count + theirs.var() / count) ** 0.5
    assert abs(ours.mean() - theirs.mean()) < 5 * standard_error
    no_fit = (ours == 0).mean(), (theirs == 0).mean()
    assert 0.05 < no_fit[1] < 0.95
    assert abs(no_fit[0] - no_fit[1]) < 5 * (no_fit[1] * (1 - no_fit[1]) * 2 / count) ** 0.5


def test_value_zero_is_the_mean_colour_and_noise_is_standard_normal():
    mean_colour = np.round(IMAGENET_MEAN).astype(np.uint8)
    images = normalize(jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 24, 24, 3))))
    both = jax.jit(  # one compile for both values
        lambda x: [
            erasing.random_erasing(jax.random.key(3), x, probability=1.0, noise=noise)
            for noise in (False, True)
        ]
    )
    out, noisy = both(images)
    out, pixels = np.asarray(out), np.asarray(images)
    erased = (out != pixels).all(axis=-1)
    assert erased.any(axis=(1, 2)).all()
    np.testing.assert_allclose(out[erased], 0.0)
    np.testing.assert_allclose(normalize(jnp.asarray(mean_colour)), 0.0, atol=0.01)
    values = np.asarray(noisy)[erased]
    assert abs(values.mean()) < 0.1 and abs(values.std() - 1) < 0.1
    assert erasing.random_erasing(jax.random.key(0), images, probability=0.0) is images
    with pytest.raises(ValueError, match="probability must be in"):
        erasing.random_erasing(jax.random.key(0), images, probability=1.5)


def test_value_matches_torchvision_on_the_normalised_tensor():
    """Same box, same image: our erased batch equals torchvision's F.erase after Normalize."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (1, 16, 20, 3), dtype=np.uint8)
    erase = jax.jit(lambda x: erasing.random_erasing(jax.random.key(5), x, probability=1.0))
    ours = erase(normalize(jnp.asarray(pixels)))
    box = np.argwhere(np.asarray(ours[0] == 0).all(-1))
    (i, j), (i2, j2) = box.min(0), box.max(0) + 1
    tensor = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(
        torch.from_numpy(pixels[0]).permute(2, 0, 1).float() / 255
    )
    theirs = transforms.functional.erase(tensor, i, j, i2 - i, j2 - j, torch.tensor([0.0]))
    np.testing.assert_allclose(np.asarray(ours[0]), theirs.permute(1, 2, 0).numpy(), atol=1e-5)
