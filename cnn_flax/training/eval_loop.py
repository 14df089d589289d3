"""Evaluation over a complete split: the eval step compiled once, every example counted once.

Used by the trainer's periodic evaluation and by ``python -m cnn_flax.evaluate``. With
``config.bn_reestimate_batches`` set, every evaluation first re-estimates the BatchNorm statistics
on that many training batches (:mod:`cnn_flax.training.bn_reestimate`); the state keeps its own.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from cnn_flax.data.mixing import normalize
from cnn_flax.training import metrics, model_builder, parallel, steps
from cnn_flax.training.bn_reestimate import reestimate_batch_stats
from cnn_flax.training.state import TrainState


class Evaluator:
    """Compiles the eval step once and runs it over the complete eval split.

    Every example of the split is counted exactly once: the eval iterator pads the last batch and
    marks the padding with ``mask=False``, and the step weights each example by its mask.

    Args:
      model: the Flax module.
      config: the training config (its ``data`` section and the eval step's fields are read).
      num_classes: classifier outputs.
      mesh: the device mesh; batches are sharded over its ``data`` axis.
      data_source: the data API (``create_eval_iterator``), e.g. :mod:`cnn_flax.data`.
      batch_size: global eval batch, a multiple of the device count.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        config: ml_collections.ConfigDict,
        num_classes: int,
        mesh: jax.sharding.Mesh,
        data_source: Any,
        batch_size: int,
    ) -> None:
        self._model = model
        self._config = config
        self._data_config = config.data
        self._data = data_source
        self._batch_size = batch_size
        self._mesh = mesh
        self._sharding = parallel.data_sharding(mesh)
        replicated = parallel.replicated_sharding(mesh)
        self._jitted = jax.jit(
            steps.make_eval_step(model, config=config, num_classes=num_classes),
            in_shardings=(replicated, self._sharding),
            out_shardings=replicated,
        )
        self._compiled = None

    def reestimated(self, variables: dict) -> dict:
        """``variables`` with BatchNorm statistics re-estimated on ``config.bn_reestimate_batches``
        training batches (the run's own, from its first), or unchanged: option off, no
        BatchNorm, or statistics frozen by the fine-tune (they are the point of that run)."""
        batches = int(self._config.get("bn_reestimate_batches", 0) or 0)
        if not batches or not variables.get("batch_stats"):
            return variables
        if model_builder.freezes_batch_norm(self._config):
            return variables
        mean, std = tuple(self._data_config.mean), tuple(self._data_config.std)
        dtype = steps.compute_dtype(self._config.dtype)
        stream = self._data.create_train_iterator(
            self._data_config,
            global_batch_size=self._batch_size,
            seed=int(self._config.seed),
            sharding=self._sharding,
        )
        images = (normalize(b["image"], mean=mean, std=std, dtype=dtype) for b in stream)
        stats = reestimate_batch_stats(self._model, variables, images, num_batches=batches)
        return {**variables, "batch_stats": stats}

    def run(self, variables: dict) -> dict[str, float]:
        """``{"top1", "top5", "loss", "num_examples"}`` of ``variables`` on the eval split."""
        variables = self.reestimated(variables)
        pairs = []
        batches = self._data.create_eval_iterator(
            self._data_config, global_batch_size=self._batch_size, sharding=self._sharding
        )
        for batch in batches:
            if self._compiled is None:
                lowered = parallel.lower_on_mesh(self._jitted, self._mesh, variables, batch)
                self._compiled = lowered.compile()
            pairs.append(self._compiled(variables, batch))
        result = metrics.reduce_pairs(pairs)
        result["num_examples"] = sum(float(np.asarray(p["top1"][1])) for p in pairs)
        return result

    def __call__(self, state: TrainState) -> dict[str, float]:
        """Raw weights, then (``ema_`` prefix) the EMA weights when the state has them."""
        out = self.run(state.variables())
        if state.ema_params is not None:
            ema = self.run(state.variables(ema=True))
            out.update({"ema_" + k: v for k, v in ema.items()})
        return out


__all__ = ["Evaluator"]
