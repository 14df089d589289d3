"""Classification loss and accuracy as (sum, count) pairs.

Returning a sum and a count instead of a mean keeps averages exact when batches are padded
(the evaluation iterator masks padding examples) and when partial results from several devices,
steps or processes are added up: ``mean = total_sum / total_count``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _mask_or_ones(mask: jax.Array | None, batch: int) -> jax.Array:
    if mask is None:
        return jnp.ones((batch,), jnp.float32)
    if mask.shape != (batch,):
        raise ValueError(
            f"mask has shape {mask.shape}; expected ({batch},), one entry per example."
        )
    return mask.astype(jnp.float32)


def smooth_labels(labels: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
    """Target distributions from int labels ``[B]`` or soft labels ``[B, C]``.

    Label smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture", section 7)
    mixes the target with the uniform distribution: ``(1 - eps) * y + eps / C``.
    """
    if labels.ndim == 1:
        targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    elif labels.ndim == 2 and labels.shape[-1] == num_classes:
        targets = labels.astype(jnp.float32)
    else:
        raise ValueError(
            f"labels have shape {labels.shape}; expected [batch] ints or [batch, {num_classes}] "
            "probabilities."
        )
    if label_smoothing:
        targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
    return targets


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    label_smoothing: float = 0.0,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy summed over the (unmasked) batch.

    Args:
      logits: ``[B, C]``; computed in float32 whatever their dtype.
      labels: int class ids ``[B]`` or target distributions ``[B, C]`` (mixup/cutmix).
      label_smoothing: weight of the uniform distribution in the target.
      mask: optional bool/float ``[B]``; examples with mask 0 contribute nothing.

    Returns:
      ``(sum, count)``: float32 scalars, the summed loss and the number of counted examples.
    """
    logits = logits.astype(jnp.float32)
    targets = smooth_labels(labels, logits.shape[-1], label_smoothing)
    per_example = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    weights = _mask_or_ones(mask, logits.shape[0])
    return jnp.sum(per_example * weights), jnp.sum(weights)


def topk_correct(
    logits: jax.Array, labels: jax.Array, *, k: int = 1, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """How many examples have their label among the ``k`` highest logits.

    Args:
      logits: ``[B, C]``.
      labels: int class ids ``[B]``, or ``[B, C]`` soft labels (their argmax is the class).
      k: how many top classes count as correct.
      mask: optional ``[B]``; masked examples count neither as correct nor in ``count``.

    Returns:
      ``(correct, count)`` as float32 scalars. Ties are broken by class index, as ``argmax`` and
      ``top_k`` break them (the lower index ranks first), so a classifier whose logits are all
      equal is right only for class 0, not for every example; a row with a non-finite logit is
      wrong (a NaN compares false with everything and would otherwise rank first).
    """
    if labels.ndim == 2:
        labels = jnp.argmax(labels, axis=-1)
    logits = logits.astype(jnp.float32)
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k={k} must be between 1 and the number of classes {logits.shape[-1]}.")
    labels = labels.astype(jnp.int32)
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    # The label's rank: classes scoring strictly higher, plus equal ones with a lower index.
    before = jnp.arange(logits.shape[-1])[None, :] < labels[:, None]
    rank = jnp.sum(logits > label_logit, axis=-1) + jnp.sum((logits == label_logit) & before, -1)
    correct = ((rank < k) & jnp.all(jnp.isfinite(logits), axis=-1)).astype(jnp.float32)
    weights = _mask_or_ones(mask, logits.shape[0])
    return jnp.sum(correct * weights), jnp.sum(weights)
