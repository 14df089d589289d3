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
      ema_batch_stats: the same average of ``batch_stats`` (``config.ema_batch_stats``, as
        torchvision's ``AveragedModel(use_buffers=True)``), or ``None``: the EMA weights are then
        evaluated with the raw statistics.
      loss_scale: ``cnn_flax.training.optim.DynamicLossScale`` for float16, else ``None``.
    """

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: optax.OptState
    ema_params: PyTree | None = None
    loss_scale: Any | None = None
    ema_batch_stats: PyTree | None = None

    def variables(self, *, ema: bool = False) -> dict:
        """``{"params", "batch_stats"}`` as the model's ``apply`` takes them."""
        if ema and self.ema_params is None:
            raise ValueError("This run keeps no EMA weights (config.ema_decay is None).")
        if ema:
            stats = self.batch_stats if self.ema_batch_stats is None else self.ema_batch_stats
            return {"params": self.ema_params, "batch_stats": stats}
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(
    variables: dict,
    tx: optax.GradientTransformation,
    *,
    use_ema: bool,
    ema_batch_stats: bool = False,
    loss_scale: Any | None = None,
) -> TrainState:
    """Builds step-0 state from initialised model variables.

    ``ema_batch_stats`` (with ``use_ema``) also averages the BatchNorm statistics.
    """
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
        loss_scale=loss_scale,
        ema_batch_stats=(
            jax.tree.map(jnp.copy, batch_stats) if use_ema and ema_batch_stats else None
        ),
    )
