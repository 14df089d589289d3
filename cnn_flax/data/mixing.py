"""On-device batch operations of the train step: normalisation, random erasing, mixup / CutMix.

These are pure JAX functions, used inside the jitted step. Images travel to the device as uint8
(4x less host->device traffic than float32) and are normalised there. This module imports no
TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from cnn_flax.models import layers

# torchvision's RandomChoice([MixUp, CutMix]) with its default p: CutMix half the time.
SWITCH_PROBABILITY = 0.5
# The models' input contract (0-1 scale, cnn_flax.models.layers) on the 0-255 scale of uint8 images.
IMAGENET_MEAN = tuple(255.0 * m for m in layers.IMAGENET_MEAN)
IMAGENET_STD = tuple(255.0 * s for s in layers.IMAGENET_STD)


def normalize(
    images_uint8: jax.Array,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
    """(x - mean) / std per channel, on the 0-255 scale, computed in float32 then cast.

    torchvision's pretrained models expect ImageNet mean/std normalisation, so the converted
    weights see exactly the inputs they were trained on.

    Args:
      images_uint8: [..., C] images in 0..255 (uint8 or float).
      mean: per-channel mean, 0-255 scale.
      std: per-channel standard deviation, 0-255 scale.
      dtype: the output (compute) dtype.

    Returns:
      Normalised images of `dtype`.
    """
    mean = jnp.asarray(mean, jnp.float32)
    inv_std = 1.0 / jnp.asarray(std, jnp.float32)
    return ((images_uint8.astype(jnp.float32) - mean) * inv_std).astype(dtype)


def _log_gamma_sample(key: jax.Array, alpha: float, candidates: int = 16) -> jax.Array:
    """log of a Gamma(alpha, 1) sample by Marsaglia & Tsang (2000), with a fixed number of
    proposals instead of a loop (acceptance > 95% each; all 16 rejected has probability
    < 1e-20). jax.random.beta's while-loop sampler takes seconds to compile on CPU; this takes
    milliseconds, and `alpha` is a static Python float anyway."""
    shape = alpha + 1.0 if alpha < 1.0 else alpha  # boost: Gamma(a) = Gamma(a + 1) * U^(1/a)
    d = shape - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    k_normal, k_accept, k_boost = jax.random.split(key, 3)
    x = jax.random.normal(k_normal, (candidates,))
    v = (1.0 + c * x) ** 3
    log_u = jnp.log(jax.random.uniform(k_accept, (candidates,), minval=1e-12))
    log_v = jnp.log(jnp.maximum(v, 1e-12))
    accept = (v > 0) & (log_u < 0.5 * x**2 + d - d * v + d * log_v)
    log_gamma = jnp.log(d) + log_v[jnp.argmax(accept)]
    if alpha < 1.0:
        log_gamma += jnp.log(jax.random.uniform(k_boost, minval=1e-30)) / alpha
    return log_gamma


def sample_beta(key: jax.Array, alpha: float) -> jax.Array:
    """lam ~ Beta(alpha, alpha) as G1 / (G1 + G2), computed in log space (no 0/0 for small
    alpha)."""
    k1, k2 = jax.random.split(key)
    return jax.nn.sigmoid(_log_gamma_sample(k1, alpha) - _log_gamma_sample(k2, alpha))


def cutmix_box(lam: jax.Array, cy: jax.Array, cx: jax.Array, *, height: int, width: int):
    """torchvision's CutMix box (Yun et al., 2019) around centre (cy, cx): half-sides
    floor(0.5 sqrt(1 - lam) * side), clipped at the border. Returns (y0, y1, x0, x1)."""
    r = 0.5 * jnp.sqrt(1.0 - lam)
    half_h, half_w = jnp.floor(r * height), jnp.floor(r * width)
    y0, y1 = jnp.maximum(cy - half_h, 0), jnp.minimum(cy + half_h, height)
    x0, x1 = jnp.maximum(cx - half_w, 0), jnp.minimum(cx + half_w, width)
    return y0, y1, x0, x1


def mix_pair(images: jax.Array, labels: jax.Array, lam: jax.Array, box=None):
    """Each example mixed with its predecessor (the batch rolled by one, as torchvision pairs
    them): mixup with weight `lam`, or, given `box` (y0, y1, x0, x1), CutMix pasting the
    predecessor's box and weighting the labels by the area kept."""
    x_other, y_other = jnp.roll(images, 1, axis=0), jnp.roll(labels, 1, axis=0)
    if box is None:
        return lam * images + (1 - lam) * x_other, lam * labels + (1 - lam) * y_other
    y0, y1, x0, x1 = box
    _, height, width, _ = images.shape
    ys = jnp.arange(height, dtype=jnp.float32)[:, None]
    xs = jnp.arange(width, dtype=jnp.float32)[None, :]
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    mixed = jnp.where(inside[None, :, :, None], x_other, images)
    return mixed, kept * labels + (1 - kept) * y_other


def mixup_cutmix(
    rng: jax.Array,
    images: jax.Array,
    labels_onehot: jax.Array,
    *,
    mixup_alpha: float,
    cutmix_alpha: float,
) -> tuple[jax.Array, jax.Array]:
    """Mixup (Zhang et al., 2018) or CutMix (Yun et al., 2019) of each example with its
    predecessor in the batch, as torchvision's recipe does it.

    One lam ~ Beta(alpha, alpha) per batch. With both alphas positive, each batch picks one of
    the two with probability 1/2 (torchvision's RandomChoice([MixUp, CutMix])). CutMix weights
    the labels by the area actually kept after clipping the box, so they match the pixels. With
    both alphas 0 the inputs are returned unchanged.

    Args:
      rng: a key, e.g. `jax.random.fold_in(jax.random.key(seed), step)`.
      images: [B, H, W, C] images (float, or uint8 which is mixed in float32).
      labels_onehot: [B, K] one-hot (or already smoothed) float labels.
      mixup_alpha: Beta parameter of mixup; 0 disables it.
      cutmix_alpha: Beta parameter of CutMix; 0 disables it.

    Returns:
      (images, soft_labels); images float (input dtype if float, else float32).
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"alphas must be >= 0, got {mixup_alpha=}, {cutmix_alpha=}")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return images, labels_onehot
    out_dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
    x = images.astype(jnp.float32)
    y = labels_onehot.astype(jnp.float32)
    r_choice, r_mix, r_cut, r_box = jax.random.split(rng, 4)
    _, height, width, _ = x.shape

    def mixup():
        return mix_pair(x, y, sample_beta(r_mix, mixup_alpha))

    def cutmix():
        ry, rx = jax.random.split(r_box)
        cy = jax.random.randint(ry, (), 0, height).astype(jnp.float32)
        cx = jax.random.randint(rx, (), 0, width).astype(jnp.float32)
        lam = sample_beta(r_cut, cutmix_alpha)
        return mix_pair(x, y, lam, cutmix_box(lam, cy, cx, height=height, width=width))

    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.bernoulli(r_choice, SWITCH_PROBABILITY)
        (xm, ym), (xc, yc) = mixup(), cutmix()
        mixed, soft = jnp.where(use_cutmix, xc, xm), jnp.where(use_cutmix, yc, ym)
    else:
        mixed, soft = cutmix() if cutmix_alpha > 0 else mixup()
    return mixed.astype(out_dtype), soft


def augment_batch(
    rng: jax.Array, images: jax.Array, labels_onehot: jax.Array, augment_config: Any
) -> tuple[jax.Array, jax.Array]:
    """The on-device augmentations of `config.data.augment`, in torchvision's order: random
    erasing per image (on the normalised images), then mixup / CutMix of the batch.

    Args:
      rng: the step's key for these augmentations.
      images: [B, H, W, C] normalised images.
      labels_onehot: [B, K] one-hot labels.
      augment_config: `config.data.augment` (random_erasing, random_erasing_noise,
        mixup_alpha, cutmix_alpha are read, once, while tracing).

    Returns:
      (images, soft labels).
    """
    from cnn_flax.data.erasing import random_erasing

    images = random_erasing(
        jax.random.fold_in(rng, 1),  # mixup keeps `rng` itself: its draws do not depend on this
        images,
        probability=float(augment_config.random_erasing),
        noise=bool(augment_config.random_erasing_noise),
    )
    return mixup_cutmix(
        rng,
        images,
        labels_onehot,
        mixup_alpha=float(augment_config.mixup_alpha),
        cutmix_alpha=float(augment_config.cutmix_alpha),
    )
