"""BatchNorm with torch's running-variance convention; per-device ("ghost") and frozen BatchNorm.

**Running variance.** In training mode a BatchNorm normalises with the biased batch variance
(divided by ``n``, the number of values per channel), but what it keeps for evaluation differs
between frameworks: torch (and so torchvision's recipes and weights, and Torch7 before it)
updates the running variance with the *unbiased* variance ``n / (n - 1)`` times larger, while
Flax and Keras keep the biased one. :class:`BatchNorm` is Flax's, with torch's update as an
option (``unbiased_running_var``, on by default: every family here follows torchvision's
recipes). The difference is the factor ``n / (n - 1)``: 1.6% at a 4x4 map with batch 4, 0.2% at
7x7 with batch 8, nothing visible at ImageNet batch sizes; it matters for small maps and small
(per-device, fine-tuning, CIFAR) batches. Forward and backward passes are Flax's, unchanged.

**Per-device statistics** (``bn_mode="per_device"``).

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
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import normalization as _normalization


def _unbiased(var: jax.Array, count) -> jax.Array:
    """The biased batch variance ``var`` of ``count`` values made unbiased (Bessel's correction),
    as torch's running update uses it; one value alone (torch refuses it) keeps ``var``."""
    count = jnp.asarray(count, var.dtype)
    return var * count / jnp.maximum(count - 1, 1)


class BatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` whose running variance follows torch's convention when asked.

    Same parameters, statistics, names and shapes as ``nn.BatchNorm`` (a subclass named the same,
    so automatically named layers keep their names), and the same forward and backward pass; only
    the running-variance update differs when ``unbiased_running_var`` is on: torch's
    ``running_var = (1 - m) * running_var + m * n / (n - 1) * batch_var`` (Ioffe and Szegedy 2015,
    Algorithm 2, which also uses the unbiased estimate for inference).

    Attributes:
      unbiased_running_var: torch's convention (True, the default) or Flax's biased one (False).
    """

    unbiased_running_var: bool = True

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        feature_axes = _normalization._canonicalize_axes(x.ndim, self.axis)
        reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
        feature_shape = [x.shape[ax] for ax in feature_axes]
        stat_dtype = jnp.float32 if self.force_float32_reductions else self.param_dtype
        ra_mean = self.variable(
            "batch_stats", "mean", lambda s: jnp.zeros(s, stat_dtype), feature_shape
        )
        ra_var = self.variable(
            "batch_stats", "var", lambda s: jnp.ones(s, stat_dtype), feature_shape
        )
        if use_running_average:
            mean = jnp.asarray(ra_mean.value, stat_dtype)
            var = jnp.asarray(ra_var.value, stat_dtype)
        else:
            axis_name = self.axis_name if not self.is_initializing() else None
            mean, var = _normalization._compute_stats(
                x,
                reduction_axes,
                dtype=self.dtype,
                axis_name=axis_name,
                axis_index_groups=self.axis_index_groups,
                use_fast_variance=self.use_fast_variance,
                mask=mask,
                force_float32_reductions=self.force_float32_reductions,
            )
            if not self.is_initializing():
                running = var
                if self.unbiased_running_var:
                    running = _unbiased(var, self._count(x, reduction_axes, mask, axis_name))
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * mean
                ra_var.value = m * ra_var.value + (1 - m) * running
        return _normalization._normalize(
            self,
            x,
            mean,
            var,
            reduction_axes,
            feature_axes,
            self.dtype,
            self.param_dtype,
            self.epsilon,
            self.use_bias,
            self.use_scale,
            self.bias_init,
            self.scale_init,
            self.force_float32_reductions,
        )

    def _count(self, x, reduction_axes, mask, axis_name):
        """Values per channel behind the batch statistics (all devices' under ``axis_name``)."""
        if mask is None:
            count = jnp.asarray(math.prod(x.shape[a] for a in reduction_axes), jnp.float32)
        else:
            per_feature = math.prod(x.shape[a] for a in range(x.ndim) if a not in reduction_axes)
            count = jnp.sum(jnp.broadcast_to(mask, x.shape), dtype=jnp.float32) / per_feature
        if axis_name is not None:
            count = jax.lax.psum(count, axis_name, axis_index_groups=self.axis_index_groups)
        return count


class GroupBatchNorm(BatchNorm):
    """:class:`BatchNorm` whose training statistics are computed per group of the batch.

    With ``unbiased_running_var`` each group's variance is corrected with its own ``n / (n - 1)``,
    as torch's BatchNorm on each device would.

    Attributes:
      num_groups: number of equal, contiguous groups along the batch axis (usually the number of
        devices). ``1`` is exactly :class:`BatchNorm`.
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
                if self.unbiased_running_var:  # each group's own n / (n - 1)
                    group_var = _unbiased(group_var, math.prod(xg.shape[1:-1]))
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
    if num_groups <= 1:
        return model
    return _swap_batch_norm(model, functools.partial(GroupBatchNorm, num_groups=num_groups))


class FrozenBatchNorm(BatchNorm):
    """``nn.BatchNorm`` that always normalises with its running statistics and never updates them.

    For fine-tuning on small batches (and the frozen backbone of a linear probe): the pretrained
    statistics stay as they are in training too, so a train-mode forward normalises exactly as an
    eval-mode ``nn.BatchNorm`` does, while dropout and stochastic depth still train. Same parameter
    and statistic names and shapes as ``nn.BatchNorm``, so checkpoints move freely between them.
    """

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        del use_running_average  # always the running statistics
        if mask is not None:
            raise NotImplementedError("FrozenBatchNorm does not support masks.")
        if self.axis not in (-1, x.ndim - 1):
            raise NotImplementedError(f"FrozenBatchNorm normalises the last axis, got {self.axis}.")
        features = x.shape[-1]
        mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32).value
        var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32).value
        y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            y = y * self.param("scale", self.scale_init, (features,), self.param_dtype)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (features,), self.param_dtype)
        return y.astype(self.dtype if self.dtype is not None else x.dtype)


def frozen_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm (found by type, as above) a :class:`FrozenBatchNorm`."""
    return _swap_batch_norm(model, FrozenBatchNorm)


def module_class(module: object) -> type | None:
    """The class a module definition builds, looking through ``functools.partial``."""
    while isinstance(module, functools.partial):
        module = module.func
    return module if isinstance(module, type) else None


def is_batch_norm(norm: object) -> bool:
    """Whether ``norm`` builds a BatchNorm (``nn.BatchNorm`` or a subclass), by type."""
    cls = module_class(norm)
    return cls is not None and issubclass(cls, nn.BatchNorm)


def torch_convention(norm):
    """A definition of ``nn.BatchNorm`` (the class or partials of it) built as :class:`BatchNorm`,
    keeping its arguments: what :func:`cnn_flax.models.layers.bind_norm` does to every plain
    ``nn.BatchNorm`` it binds."""
    return _rebuilt(norm, BatchNorm)


def biased_running_var(model: nn.Module) -> nn.Module:
    """``model`` with Flax's (and Keras's) biased running-variance update in every BatchNorm, for
    ``config.bn_running_var="biased"``: to continue a run made before torch's convention became
    the default, or to follow a TensorFlow reference's statistics exactly."""
    return _swap_batch_norm(model, functools.partial(BatchNorm, unbiased_running_var=False))


def _swap_batch_norm(model: nn.Module, replacement) -> nn.Module:
    swaps = {}
    for field in dataclasses.fields(model):
        value = getattr(model, field.name, None)
        if field.name not in ("parent", "name") and is_batch_norm(value):
            swaps[field.name] = _rebuilt(value, replacement)
    return model.clone(**swaps) if swaps else model


def _rebuilt(norm, replacement):
    """The same BatchNorm definition (a class or partials of one) built as ``replacement``.

    A subclass of :class:`BatchNorm` that is replaced by a partial of another keeps what sets it
    apart only through its keywords: the running-variance option travels with the partials.
    """
    if isinstance(norm, functools.partial):
        inner = _rebuilt(norm.func, replacement)
        return functools.partial(inner, *norm.args, **norm.keywords)
    # partial(BatchNorm, unbiased_running_var=False) applied to a GroupBatchNorm: keep the group
    # class, take the option.
    subclass = isinstance(norm, type) and issubclass(norm, BatchNorm) and norm is not BatchNorm
    if isinstance(replacement, functools.partial) and subclass:
        return functools.partial(norm, **replacement.keywords)
    return replacement
