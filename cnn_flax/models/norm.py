"""Per-device ("ghost") BatchNorm for ``bn_mode="per_device"``.

Under ``jax.jit`` with the batch sharded over devices, ``nn.BatchNorm`` computes *global* batch
statistics: XLA inserts an all-reduce, exactly as a synchronised BatchNorm would. The original
multi-GPU ResNet training (Goyal et al. 2017, "Accurate, Large Minibatch SGD", section 3 and
appendix) instead normalised each device's examples separately, with a fixed per-device batch
(32). :class:`GroupBatchNorm` reproduces that: it splits the batch into ``num_groups`` contiguous
groups (one per device when ``num_groups`` equals the mesh size) and normalises each with its own
statistics. Because the groups line up with the batch sharding, XLA keeps the reduction local to
each device: no cross-device communication. Hoffer et al. 2017 ("Train longer, generalize better")
call this ghost batch normalisation.

Parameter and statistic names and shapes are those of ``flax.linen.BatchNorm`` (params ``scale``,
``bias``; batch_stats ``mean``, ``var``), so checkpoints move freely between the two modes and
evaluation always uses plain ``nn.BatchNorm``. The running statistics are the average over groups.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


class GroupBatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` whose training statistics are computed per group of the batch.

    Attributes:
      num_groups: number of equal, contiguous groups along the batch axis (usually the number of
        devices). ``1`` is exactly ``nn.BatchNorm``.
    """

    num_groups: int = 1

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        if mask is not None:
            raise NotImplementedError("GroupBatchNorm does not support masks.")
        if self.axis not in (-1, x.ndim - 1):
            raise NotImplementedError(f"GroupBatchNorm normalises the last axis, got {self.axis}.")
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        scale = (
            self.param("scale", self.scale_init, (features,), self.param_dtype)
            if self.use_scale
            else None
        )
        bias = (
            self.param("bias", self.bias_init, (features,), self.param_dtype)
            if self.use_bias
            else None
        )

        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
            y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon)
        else:
            groups = self.num_groups if not self.is_initializing() else 1
            if x.shape[0] % groups:
                raise ValueError(
                    f"GroupBatchNorm: batch {x.shape[0]} is not divisible into {groups} groups."
                )
            xg = x.astype(jnp.float32).reshape((groups, x.shape[0] // groups) + x.shape[1:])
            axes = tuple(range(1, xg.ndim - 1))
            mean = jnp.mean(xg, axis=axes, keepdims=True)
            # Two-pass variance: as cheap as E[x^2] - E[x]^2 here, and never negative.
            var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)
            y = ((xg - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
            if not self.is_initializing():
                group_mean = mean.reshape(groups, features).mean(axis=0)
                group_var = var.reshape(groups, features).mean(axis=0)
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * group_mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * group_var
        if scale is not None:
            y = y * scale
        if bias is not None:
            y = y + bias
        dtype = self.dtype if self.dtype is not None else x.dtype
        return y.astype(dtype)


def per_device_batch_norm(model: nn.Module, num_groups: int) -> nn.Module:
    """``model`` with every BatchNorm it is given swapped for :class:`GroupBatchNorm`.

    BatchNorm is found by type, not by a field name: every dataclass field of the module whose
    value builds an ``nn.BatchNorm`` (class or partial) is replaced, keeping the partial's
    arguments. Models without BatchNorm (ViT, ConvNeXt) come back unchanged, as does any model
    when ``num_groups`` is 1.
    """
    from cnn_flax.models.layers import is_batch_norm

    if num_groups <= 1:
        return model
    swaps = {}
    for field in dataclasses.fields(model):
        value = getattr(model, field.name, None)
        if field.name not in ("parent", "name") and is_batch_norm(value):
            swaps[field.name] = _as_group_norm(value, num_groups)
    return model.clone(**swaps) if swaps else model


def _as_group_norm(norm, num_groups: int):
    """The same BatchNorm definition, built as a GroupBatchNorm with ``num_groups`` groups."""
    if isinstance(norm, functools.partial):
        inner = _as_group_norm(norm.func, num_groups)
        return functools.partial(inner, *norm.args, **norm.keywords)
    return functools.partial(GroupBatchNorm, num_groups=num_groups)
