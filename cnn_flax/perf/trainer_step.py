"""The trainer's own train step (``cnn_flax.training.steps``), set up for benchmarking.

This is the step ``python -m cnn_flax.train`` runs: uint8 images normalised on device, one-hot
labels, cross-entropy, gradient, optimizer update, BatchNorm statistics and on-device (sum,
count) metrics. It needs ``ml_collections`` for its config; :func:`available` says whether it can
be used, and the benchmark falls back to :mod:`cnn_flax.perf.jax_steps` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.perf import jax_steps

DESCRIPTION = (
    "cnn_flax.training.steps.make_train_step (the trainer's step, SGD momentum, donated state)"
)


def available() -> str | None:
    """``None`` if the trainer's step can be built here, else the reason it cannot."""
    try:
        import cnn_flax.configs.base  # noqa: F401
        import cnn_flax.training.state  # noqa: F401
        import cnn_flax.training.steps  # noqa: F401
    except ImportError as err:
        return f"{type(err).__name__}: {err}"
    return None


def build(
    model: nn.Module, *, dtype: str, batch_size: int, resolution: int
) -> tuple[Callable[[Any, dict], tuple[Any, Any]], Any, dict]:
    """``(train_step, state, batch)`` for the trainer's step on synthetic uint8 images.

    The optimizer is the same SGD with momentum as the minimal step, so the two measure the same
    work apart from the trainer's input normalisation and metrics.
    """
    from cnn_flax.configs.base import get_base_config
    from cnn_flax.training import steps
    from cnn_flax.training.state import create_train_state

    config = get_base_config()
    config.dtype = dtype
    config.batch_size = batch_size
    # GoogLeNet's auxiliary heads train with its recipe's weight; other models have none.
    config.aux_loss_weight = 0.3
    tx = jax_steps.sgd_momentum()
    variables = jax_steps.init_variables(model, resolution=resolution)
    state = create_train_state(variables, tx, use_ema=False)
    key = jax.random.key(2)
    batch = {
        "image": jax.random.randint(
            key, (batch_size, resolution, resolution, 3), 0, 256, jnp.int32
        ).astype(jnp.uint8),
        "label": jax.random.randint(key, (batch_size,), 0, 1000, jnp.int32),
    }
    return steps.make_train_step(model, tx, config=config, num_classes=1000), state, batch
