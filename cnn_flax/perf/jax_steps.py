"""A minimal jitted train step and eval forward for benchmarking.

The benchmark must run where only jax, flax and optax are installed (no TensorFlow, no input
pipeline), so it does not use the trainer's step, which needs the data package. This step does
the same work on the device: forward in the compute dtype with float32 BatchNorm statistics,
float32 softmax cross-entropy, backward, SGD with momentum 0.9 (Polyak 1964; Sutskever et al.
2013) and the BatchNorm running-statistics update. The state is donated, so parameters,
statistics and optimizer state are updated in place rather than copied every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
State = dict[str, Any]

# Rematerialisation policies for --remat (Chen et al. 2016, "Training Deep Nets with Sublinear
# Memory Cost"). "dots" keeps the convolution and matmul outputs and recomputes the cheap
# elementwise work (BatchNorm, activations) in the backward pass; "full" keeps nothing. Both
# wrap the whole loss; "blocks" (see remat_blocks) wraps each residual block instead.
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
    "blocks": None,  # per-block nn.remat inside the model, see remat_blocks
}


def remat_blocks(model: nn.Module) -> nn.Module:
    """``model`` with each residual block wrapped in ``nn.remat`` (recomputed in the backward).

    Whole-step rematerialisation cannot lower the peak: the backward pass recomputes every
    activation before it needs the first one. Per block, only the block inputs are kept and one
    block's activations are live at a time, for about one extra forward of compute. Parameter
    names do not change, so checkpoints are unaffected.

    Raises:
      ValueError: for a model without a ``block`` field (only the ResNet family has one).
    """
    block = getattr(model, "block", None)
    if block is None:
        raise ValueError(
            f"--remat=blocks needs a model with a `block` field (the ResNet family); "
            f"{type(model).__name__} has none. Use --remat=dots or --remat=full instead."
        )
    return model.clone(block=nn.remat(block))


def logits_of(outputs: Any) -> jax.Array:
    """The main logits (GoogLeNet in train mode returns a tuple, main logits first)."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def init_variables(model: nn.Module, *, resolution: int, seed: int = 0) -> dict:
    """Model variables of the right shapes, drawn on the host without compiling ``model.init``.

    A jitted ``init`` is a large XLA program (a random draw per parameter); on a small CPU it
    compiles for as long as the step being measured. The values only need to be sane for a
    speed measurement: He-normal kernels (He et al. 2015), unit scales, zero biases and means,
    unit variances.
    """
    shapes = jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)), train=False
        )
    )
    rng = np.random.default_rng(seed)

    def draw(path, leaf: jax.ShapeDtypeStruct) -> jax.Array:
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            value = np.ones(leaf.shape, np.float32)
        elif len(leaf.shape) <= 1:
            value = np.zeros(leaf.shape, np.float32)
        else:
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.standard_normal(leaf.shape, np.float32) * np.sqrt(2.0 / fan_in)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def init_state(model: nn.Module, *, resolution: int, tx: optax.GradientTransformation) -> State:
    """Initial ``{"step", "params", "batch_stats", "opt_state"}`` on the default device."""
    variables = init_variables(model, resolution=resolution)
    params = variables["params"]
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "batch_stats": variables.get("batch_stats", {}),
        # One small program instead of an eager zeros op per leaf.
        "opt_state": jax.jit(tx.init)(params),
    }


def sgd_momentum(learning_rate: float = 0.1) -> optax.GradientTransformation:
    """SGD with momentum 0.9 and weight decay 1e-4, the ResNet recipe (He et al. 2016)."""
    return optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(learning_rate, momentum=0.9))


def make_train_step(
    model: nn.Module, tx: optax.GradientTransformation, *, remat: str = "none"
) -> Callable[[State, jax.Array, jax.Array], tuple[State, jax.Array]]:
    """The pure train step ``(state, images, labels) -> (state, loss)``.

    Args:
      model: the Flax module.
      tx: the optimizer.
      remat: a key of :data:`REMAT_POLICIES`.

    Raises:
      ValueError: for an unknown ``remat``.
    """
    if remat not in REMAT_POLICIES:
        raise ValueError(f"Unknown remat policy {remat!r}; use one of {sorted(REMAT_POLICIES)}.")

    def loss_fn(params: PyTree, batch_stats: PyTree, images, labels, rng):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        outputs, updates = model.apply(
            variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
        )
        logits = logits_of(outputs).astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates.get("batch_stats", {})

    if REMAT_POLICIES[remat] is not None:
        loss_fn = jax.checkpoint(loss_fn, policy=REMAT_POLICIES[remat])

    def train_step(state: State, images: jax.Array, labels: jax.Array):
        rng = jax.random.fold_in(jax.random.key(0), state["step"])
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, batch_stats), grads = grad_fn(
            state["params"], state["batch_stats"], images, labels, rng
        )
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "batch_stats": batch_stats,
            "opt_state": opt_state,
        }
        return new_state, loss

    return train_step


def make_infer_step(model: nn.Module) -> Callable[[dict, jax.Array], jax.Array]:
    """The eval forward ``(variables, images) -> logits`` (running BatchNorm statistics)."""

    def infer_step(variables: dict, images: jax.Array) -> jax.Array:
        return logits_of(model.apply(variables, images, train=False))

    return infer_step
