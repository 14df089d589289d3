"""The training state: everything a run needs to continue bit-exactly from a checkpoint."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """A pure pytree (no functions), so it can be donated, sharded and checkpointed as is.

    Attributes:
      step: number of optimizer steps taken (int32 scalar).
      params: float32 model parameters.
      batch_stats: BatchNorm running statistics (``{}`` for models without BatchNorm).
      opt_state: optax state of the optimizer.
      ema_params: exponential moving average of ``params`` or ``None`` (config.ema_decay unset).
      loss_scale: ``cnn_flax.optim.DynamicLossScale`` for float16, else ``None``.
    """

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: optax.OptState
    ema_params: PyTree | None = None
    loss_scale: Any | None = None

    def variables(self, *, ema: bool = False) -> dict:
        """``{"params", "batch_stats"}`` as the model's ``apply`` takes them."""
        if ema and self.ema_params is None:
            raise ValueError("This run keeps no EMA weights (config.ema_decay is None).")
        return {
            "params": self.ema_params if ema else self.params,
            "batch_stats": self.batch_stats,
        }


def create_train_state(
    variables: dict,
    tx: optax.GradientTransformation,
    *,
    use_ema: bool,
    loss_scale: Any | None = None,
) -> TrainState:
    """Builds step-0 state from initialised model variables."""
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
        loss_scale=loss_scale,
    )
