"""Mixed precision: bf16 compute keeps float32 parameters and statistics, and stays close."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, list_models, model_info
from tests.helpers import input_resolution, random_variables


def one_model_per_family() -> list[str]:
    chosen: dict[str, str] = {}
    for name in list_models():
        chosen.setdefault(model_info(name).family, name)
    return sorted(chosen.values())


# Relative gap allowed between bf16 and float32 logits: bf16 keeps 8 bits of mantissa (0.4%
# relative per rounding) and the error grows with depth; 5% of the logit spread still leaves the
# prediction intact while catching a layer that runs in the wrong precision or overflows.
BF16_RELATIVE_GAP = 0.05


@pytest.mark.parametrize("name", one_model_per_family())
def test_bf16_logits_close_to_float32(name):
    res = input_resolution(name)
    x = jax.random.normal(jax.random.key(0), (4, res, res, 3))
    fp32 = create_model(name, num_classes=10)
    bf16 = create_model(name, num_classes=10, dtype=jnp.bfloat16)
    variables = random_variables(fp32, x)

    ref = np.asarray(jax.jit(lambda v, x: fp32.apply(v, x, train=False))(variables, x))
    got = jax.jit(lambda v, x: bf16.apply(v, x, train=False))(variables, x)
    assert got.dtype == jnp.float32  # logits leave the model in float32
    gap = np.max(np.abs(np.asarray(got) - ref))
    spread = np.max(np.abs(ref - ref.mean(axis=-1, keepdims=True)))
    print(f"bf16 {name}: max gap {gap:.3g}, logit spread {spread:.3g}")
    assert gap <= BF16_RELATIVE_GAP * spread


@pytest.mark.parametrize("name", one_model_per_family())
def test_bf16_keeps_float32_params_and_statistics(name):
    res = input_resolution(name)
    x = jax.random.normal(jax.random.key(0), (2, res, res, 3))
    model = create_model(name, num_classes=10, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(1), x, train=False), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    variables = random_variables(model, x)
    if "batch_stats" not in variables:
        return
    _, updates = jax.jit(
        lambda v, x: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}
        )
    )(variables, x)
    stats = jax.tree.leaves(updates["batch_stats"])
    assert {leaf.dtype for leaf in stats} == {jnp.dtype(jnp.float32)}
    changed = jax.tree.map(
        lambda a, b: not np.allclose(a, b), updates["batch_stats"], variables["batch_stats"]
    )
    assert any(jax.tree.leaves(changed))  # statistics were actually updated in train mode
