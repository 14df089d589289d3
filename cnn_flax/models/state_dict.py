"""Tensor layout conversions and a strict reader for PyTorch-style state dicts.

The reader records which keys a family's mapping consumed; :func:`cnn_flax.weights.convert`
then refuses a state dict with keys left over, so a mapping can never drop weights silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor or array-like as a float32/int numpy array, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch ``[out, in / groups, kh, kw]`` to Flax ``[kh, kw, in / groups, out]``."""
    return np.transpose(weight, (2, 3, 1, 0))


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Linear ``[out, in]`` to Flax Dense ``[in, out]``."""
    return np.transpose(weight)


def dense_kernel_from_nchw_flatten(weight: np.ndarray, channels: int, height: int, width: int):
    """A Linear that follows a flatten of ``C, H, W`` features, re-ordered for NHWC's ``H, W, C``.

    torchvision flattens NCHW feature maps, so its first classifier layer indexes inputs as
    ``c * H * W + h * W + w``; ours flattens NHWC and indexes ``(h * W + w) * C + c``.
    """
    out = weight.shape[0]
    if weight.shape[1] != channels * height * width:
        raise ValueError(
            f"Classifier weight has {weight.shape[1]} inputs, expected "
            f"{channels}x{height}x{width}={channels * height * width}."
        )
    w = weight.reshape(out, channels, height, width).transpose(2, 3, 1, 0)
    return w.reshape(height * width * channels, out)


class StateDictReader:
    """Reads a state dict by key and remembers which keys were used."""

    def __init__(self, state_dict: Mapping[str, Any]):
        self._sd = {k: to_numpy(v) for k, v in state_dict.items()}
        self._used: set[str] = set()

    def __call__(self, key: str) -> np.ndarray:
        if key not in self._sd:
            near = [k for k in self._sd if k.split(".")[0] == key.split(".")[0]][:8]
            raise KeyError(
                f"The state dict has no {key!r}; is it from the matching model and format? "
                f"Keys near it: {near or sorted(self._sd)[:8]}"
            )
        self._used.add(key)
        return self._sd[key]

    def has(self, key: str) -> bool:
        return key in self._sd

    def unused(self) -> list[str]:
        # BatchNorm's step counter has no Flax counterpart and carries no information.
        return sorted(
            k for k in self._sd if k not in self._used and not k.endswith("num_batches_tracked")
        )

    def conv(self, prefix: str, *, bias: bool = False) -> dict[str, np.ndarray]:
        """``{"kernel": ...}`` (and ``"bias"``) of a torch ``Conv2d`` at ``prefix``."""
        out = {"kernel": conv_kernel(self(f"{prefix}.weight"))}
        if bias:
            out["bias"] = self(f"{prefix}.bias")
        return out

    def dense(self, prefix: str) -> dict[str, np.ndarray]:
        """``{"kernel", "bias"}`` of a torch ``Linear`` at ``prefix``."""
        return {"kernel": dense_kernel(self(f"{prefix}.weight")), "bias": self(f"{prefix}.bias")}

    def batch_norm(self, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(params, batch_stats)`` of a torch ``BatchNorm2d`` at ``prefix``."""
        params = {"scale": self(f"{prefix}.weight"), "bias": self(f"{prefix}.bias")}
        stats = {"mean": self(f"{prefix}.running_mean"), "var": self(f"{prefix}.running_var")}
        return params, stats

    def layer_norm(self, prefix: str) -> dict[str, np.ndarray]:
        """``{"scale", "bias"}`` of a torch ``LayerNorm`` at ``prefix``."""
        return {"scale": self(f"{prefix}.weight"), "bias": self(f"{prefix}.bias")}

    def conv_bn(self, conv_prefix: str, bn_prefix: str) -> tuple[dict, dict]:
        """``(params, batch_stats)`` of a :class:`cnn_flax.models.layers.ConvBN`."""
        bn_params, bn_stats = self.batch_norm(bn_prefix)
        return {"conv": self.conv(conv_prefix), "bn": bn_params}, {"bn": bn_stats}
