"""Every registered model: a forward pass in eval and train mode at a small resolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, list_models
from tests.helpers import input_resolution


@pytest.mark.parametrize("name", list_models())
def test_forward_eval_and_train(name):
    res = input_resolution(name)
    model = create_model(name, num_classes=10)
    x = jax.random.normal(jax.random.key(0), (2, res, res, 3))
    variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(x)
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()

    mutable = ["batch_stats"] if "batch_stats" in variables else []
    train_apply = jax.jit(
        lambda v, x: model.apply(
            v, x, train=True, mutable=mutable, rngs={"dropout": jax.random.key(2)}
        )
    )
    out, _ = train_apply(variables, x)
    main = out[0] if isinstance(out, tuple) else out
    assert main.shape == (2, 10)
    assert np.isfinite(np.asarray(main)).all()
