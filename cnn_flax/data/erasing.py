"""Random erasing (Zhong et al., 2020) with torchvision's `RandomErasing` semantics, on device.

torchvision erases after `Normalize`, so its default value 0 is the mean colour, and "random"
is N(0, 1) noise in normalised units; neither is a uint8 value, so the host pipeline cannot
reproduce it exactly. It runs here instead, on the normalised batch inside the jitted step: a
few elementwise ops per image, with no host work and no extra transfer. Per image: with
probability p, up to 10 attempts each draw an area fraction uniform in `scale` and a log aspect
ratio uniform in log(`ratio`), h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)); the
first attempt with h < H and w < W is erased at a uniform position; when none fits the image is
left as is. This module imports no TensorFlow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCALE = (0.02, 0.33)
RATIO = (0.3, 3.3)
ATTEMPTS = 10


def erasing_boxes(
    box_uniforms: jax.Array,
    position_uniforms: jax.Array,
    *,
    height: int,
    width: int,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """torchvision's `RandomErasing.get_params` rule as a function of its uniform draws.

    Args:
      box_uniforms: [..., ATTEMPTS, 2] uniforms in [0, 1): attempt k's area and aspect draws.
      position_uniforms: [..., 2] uniforms in [0, 1): the accepted box's top and left draws
        (torch.randint(0, n) read as floor(u * n)).
      height: image height.
      width: image width.
      scale: range of the erased fraction of the area.
      ratio: range of the box's aspect ratio (height / width).

    Returns:
      (top, left, h, w) int32 [...]; all 0 where no attempt fits.
    """
    u_area, u_ratio = box_uniforms[..., 0], box_uniforms[..., 1]
    log_lo, log_hi = jnp.log(jnp.float32(ratio[0])), jnp.log(jnp.float32(ratio[1]))
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u_area)
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * u_ratio)
    h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)  # half to even, as Python's round
    w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (h < height) & (w < width)
    first = jnp.argmax(fits, axis=-1)[..., None]
    found = fits.any(axis=-1)
    h = jnp.where(found, jnp.take_along_axis(h, first, axis=-1)[..., 0], 0)
    w = jnp.where(found, jnp.take_along_axis(w, first, axis=-1)[..., 0], 0)
    top = jnp.floor(position_uniforms[..., 0] * (height - h + 1)).astype(jnp.int32)
    left = jnp.floor(position_uniforms[..., 1] * (width - w + 1)).astype(jnp.int32)
    return jnp.where(found, top, 0), jnp.where(found, left, 0), h, w


def random_erasing(
    rng: jax.Array,
    images: jax.Array,
    *,
    probability: float,
    noise: bool = False,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
) -> jax.Array:
    """Erases one random box per image with probability `probability` (see module docstring).

    Args:
      rng: a key, e.g. split from `fold_in(key(seed), step)`, so a resumed run erases the same.
      images: [B, H, W, C] NORMALISED images (value 0 is the mean colour).
      probability: per-image probability; 0 returns `images` unchanged.
      noise: erase with N(0, 1) noise (torchvision value="random") instead of 0.
      scale: range of the erased fraction of the area.
      ratio: range of the box's aspect ratio.

    Returns:
      The images, same shape and dtype.
    """
    if not 0 <= probability <= 1:
        raise ValueError(f"random erasing probability must be in [0, 1], got {probability}")
    if probability == 0:
        return images
    batch, height, width, _ = images.shape
    k_uniform, k_noise = jax.random.split(rng)
    # One draw for everything (cheaper to compile than one per use): apply, boxes, position.
    uniforms = jax.random.uniform(k_uniform, (batch, 1 + 2 * ATTEMPTS + 2))
    apply = uniforms[:, 0] < probability
    top, left, h, w = erasing_boxes(
        uniforms[:, 1 : 1 + 2 * ATTEMPTS].reshape(batch, ATTEMPTS, 2),
        uniforms[:, 1 + 2 * ATTEMPTS :],
        height=height,
        width=width,
        scale=scale,
        ratio=ratio,
    )
    h, w = jnp.where(apply, h, 0), jnp.where(apply, w, 0)
    ys = jnp.arange(height)[None, :, None]
    xs = jnp.arange(width)[None, None, :]
    inside = (ys >= top[:, None, None]) & (ys < (top + h)[:, None, None])
    inside &= (xs >= left[:, None, None]) & (xs < (left + w)[:, None, None])
    if noise:
        value = jax.random.normal(k_noise, images.shape, jnp.float32).astype(images.dtype)
    else:
        value = jnp.zeros((), images.dtype)
    return jnp.where(inside[..., None], value, images)
