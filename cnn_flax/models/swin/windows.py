"""The geometry of (shifted) window attention in Swin Transformers, as constants and reshapes.

Everything here depends only on the window size and the map's size, so it is computed once per
shape with numpy (the masks and indices) or is a pure reshape (partition and reverse); the
modules in :mod:`cnn_flax.models.swin.model` use it and the tests compare it with torchvision's.
"""

from __future__ import annotations

import jax
import numpy as np

# torchvision's additive attention mask between the pieces of a shifted window.
MASK_VALUE = -100.0


def window_partition(x: jax.Array, window: int) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B * nW, window * window, C]``, windows row-major within each image.

    ``H`` and ``W`` must be multiples of ``window``.
    """
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: jax.Array, window: int, height: int, width: int) -> jax.Array:
    """The inverse of :func:`window_partition`: ``[B * nW, window ** 2, C]`` -> ``[B, H, W, C]``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window: int) -> np.ndarray:
    """``[N, N]`` indices into the ``(2M - 1) ** 2`` relative positions, ``N = M * M``.

    Token ``i`` at ``(y_i, x_i)`` and ``j`` at ``(y_j, x_j)`` of a window read the entry
    ``(y_i - y_j + M - 1) * (2M - 1) + (x_i - x_j + M - 1)`` (Sec. 3.2).
    """
    y, x = np.divmod(np.arange(window * window), window)
    dy = y[:, None] - y[None, :] + window - 1
    dx = x[:, None] - x[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def effective_shift(height: int, width: int, window: int, shift: int) -> tuple[int, int]:
    """The shift along each axis of a ``height x width`` (padded) map: none along an axis only
    one window long, where rolling would bring nothing new into the window (torchvision's rule;
    the paper's code shrinks the window to the map instead)."""
    return (0 if height <= window else shift, 0 if width <= window else shift)


def _regions(size: int, window: int, shift: int) -> np.ndarray:
    """Along one axis of a rolled map: which of the (up to) three original pieces each row is."""
    labels = np.zeros(size, np.int64)
    if shift:
        labels[size - window : size - shift] = 1
        labels[size - shift :] = 2
    return labels


def shift_mask(height: int, width: int, window: int, shift: tuple[int, int]) -> np.ndarray:
    """``[nW, N, N]`` additive mask of shifted-window attention on a ``height x width`` map.

    After the cyclic roll by ``shift``, the last window along each shifted axis holds tokens
    from opposite borders of the image; tokens attend only within the piece they came from
    (Fig. 4), everything else gets :data:`MASK_VALUE`. ``height``/``width`` are the padded sizes.
    """
    labels = 3 * _regions(height, window, shift[0])[:, None] + _regions(width, window, shift[1])
    windows = np.asarray(window_partition(labels[None, :, :, None], window))[..., 0]
    same = windows[:, :, None] == windows[:, None, :]
    return np.where(same, 0.0, MASK_VALUE).astype(np.float32)


def relative_coords_table(window: int) -> np.ndarray:
    """V2's ``[2M - 1, 2M - 1, 2]`` log-spaced relative coordinates (Sec. 3.3, Eq. 4).

    Offsets are scaled to [-8, 8], then ``sign(d) * log2(1 + |d|) / 3``: within [-1, 1].
    """
    offsets = np.arange(-(window - 1), window, dtype=np.float32) / (window - 1) * 8.0
    grid = np.stack(np.meshgrid(offsets, offsets, indexing="ij"), axis=-1)
    return (np.sign(grid) * np.log2(np.abs(grid) + 1.0) / 3.0).astype(np.float32)
