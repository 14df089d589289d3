"""Vision Transformer specifics: position-embedding resizing against torchvision's, on-the-fly
resizing at another input size, the image size read off converted weights, attention dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model
from cnn_flax.models.vit import bicubic_matrix, resize_position_embedding
from cnn_flax.weights import model_overrides
from tests.helpers import random_variables


def _tiny(**overrides):
    size = {"num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}
    return create_model("vit_b_16", num_classes=5, **{**size, **overrides})


@pytest.mark.torch
@pytest.mark.parametrize(("old", "new"), [(14, 24), (14, 7), (2, 5), (3, 1)])
def test_resize_matches_torchvision_interpolate_embeddings(old, new):
    torch = pytest.importorskip("torch")
    vision_transformer = pytest.importorskip("torchvision.models.vision_transformer")
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((1, 1 + old * old, 8)).astype(np.float32)
    state = {"encoder.pos_embedding": torch.from_numpy(pos.copy())}
    expected = vision_transformer.interpolate_embeddings(new * 16, 16, state)
    ours = resize_position_embedding({"params": {"pos_embedding": pos}}, grid=new)
    np.testing.assert_allclose(
        ours["params"]["pos_embedding"],
        expected["encoder.pos_embedding"].numpy(),
        rtol=0,
        atol=1e-5,
    )


def test_bicubic_matrix_keeps_constants_and_endpoints():
    for n_in, n_out in ((14, 24), (5, 3), (2, 7)):
        matrix = bicubic_matrix(n_in, n_out)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)  # a constant stays
        assert matrix[0, 0] == pytest.approx(1.0) and matrix[-1, -1] == pytest.approx(1.0)


def test_other_input_size_resizes_the_grid_on_the_fly():
    """A model laid out for 32 px applied at 64 px computes what a 64-px model holding the
    resized embeddings computes."""
    x32 = jnp.zeros((1, 32, 32, 3))
    model32 = _tiny(image_size=32)
    variables = random_variables(model32, x32)
    x64 = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    on_the_fly = model32.apply(variables, x64, train=False)
    model64 = _tiny(image_size=64)
    resized = resize_position_embedding(variables, grid=4)
    np.testing.assert_allclose(
        on_the_fly, model64.apply(resized, x64, train=False), rtol=1e-5, atol=1e-5
    )


def test_image_size_is_read_off_the_weights():
    variables = {"params": {"pos_embedding": np.zeros((1, 1 + 24 * 24, 8))}}
    assert model_overrides("vit_b_16", variables) == {"image_size": 384}
    assert model_overrides(
        "vit_h_14", {"params": {"pos_embedding": np.zeros((1, 1 + 37**2, 8))}}
    ) == {"image_size": 518}


def test_attention_dropout_path_matches_fused_attention():
    """With a vanishing rate the explicit (dropout) attention path equals the fused one."""
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    fused = _tiny(image_size=32)
    variables = random_variables(fused, x)
    explicit = _tiny(image_size=32, attention_dropout=1e-9)
    rngs = {"dropout": jax.random.key(3)}
    out_fused = fused.apply(variables, x, train=True, rngs=rngs)
    out_explicit = explicit.apply(variables, x, train=True, rngs=rngs)
    np.testing.assert_allclose(out_fused, out_explicit, rtol=1e-5, atol=1e-5)


def test_bad_patch_grid_is_refused():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        _tiny(image_size=40).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
