"""Forward passes at a small resolution.

Every registered model gets an eval-mode forward test: the torchvision parity test
(tests/convert/test_parity.py) is that test for models torchvision has, and this file covers the
rest. Train mode (batch statistics, dropout, drop path, auxiliary heads) is family code that
deeper or wider variants share, so it runs for the first model of each family and for every
variant that switches a structural option (naive Inception, full convolutions, plain nets, Lite).
Parameter-count tests trace every variant's full structure on top of this.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, list_models, model_info
from tests.helpers import input_resolution, random_variables, zoo_params


def _train_mode_models() -> list[str]:
    first_of_family: dict[str, str] = {}
    for name in list_models():
        first_of_family.setdefault(model_info(name).family, name)
    options = [
        n
        for n in list_models()
        if any(tag in n for tag in ("naive", "full_conv", "plain", "lite0", "_5x5"))
        and n not in ("plain32", "plain34", "plain44", "plain50", "plain56", "plain110")
    ]
    # MobileNet v2 shares a family with v1 but has its own block.
    return sorted(set(first_of_family.values()) | set(options) | {"mobilenet_v2"})


EVAL_ONLY = [n for n in list_models() if not model_info(n).torchvision]
TRAIN_MODE = _train_mode_models()


@pytest.mark.parametrize("name", zoo_params(sorted(set(EVAL_ONLY) | set(TRAIN_MODE))))
def test_forward(name):
    res = input_resolution(name)
    model = create_model(name, num_classes=10)
    x = jax.random.normal(jax.random.key(0), (2, res, res, 3))
    variables = random_variables(model, x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}

    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()

    if name not in TRAIN_MODE:
        return
    mutable = ["batch_stats"] if "batch_stats" in variables else []
    train_apply = jax.jit(
        lambda v, x: model.apply(
            v, x, train=True, mutable=mutable, rngs={"dropout": jax.random.key(2)}
        )
    )
    out, updates = train_apply(variables, x)
    assert out.shape == (2, 10) and out.dtype == jnp.float32  # the same structure in every mode
    assert np.isfinite(np.asarray(out)).all()
    if mutable:  # train mode updates the running statistics
        changed = jax.tree.map(
            lambda a, b: not np.allclose(a, b), updates["batch_stats"], variables["batch_stats"]
        )
        assert any(jax.tree.leaves(changed))


@pytest.mark.parametrize("name", ["alexnet", "resnet20"])
def test_real_initialisers_run(name):
    """``model.init`` itself (the compiled initialisers) for a plain and a BatchNorm model."""
    res = input_resolution(name)
    model = create_model(name, num_classes=10)
    x = jnp.zeros((1, res, res, 3))
    variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(x)
    leaves = jax.tree.leaves(variables["params"])
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)
    assert any(np.asarray(leaf).std() > 0 for leaf in leaves)
