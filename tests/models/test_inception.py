"""Inception v3 specifics the registry-wide tests do not cover: the auxiliary classifier (train
mode only, its numerics against torchvision's, the input size it needs), torchvision's
published-weights layout (``transform_input=True``, with or without the auxiliary head) and the
smallest input evaluation accepts."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, layers
from cnn_flax.models.inception import BasicConv, InceptionAux
from tests.helpers import param_count

RES = 299  # the auxiliary classifier needs 17x17 maps, which only 299-pixel inputs give
SMALL = 75  # the smallest input the unpadded stem and reductions accept


def output_shapes(*, train: bool, res: int = RES, **overrides):
    """Parameter, output and sown auxiliary-logit shapes, traced without computing."""
    model = create_model("inception_v3", **{"num_classes": 10, **overrides})
    x = jnp.zeros((2, res, res, 3))

    def run():
        variables = model.init(jax.random.key(0), x, train=False)
        if not train:
            return variables, model.apply(variables, x, train=False), {}
        out, updates = model.apply(
            variables,
            x,
            train=True,
            mutable=["batch_stats", layers.AUX_COLLECTION],
            rngs={"dropout": jax.random.key(1)},
        )
        return variables, out, updates.get(layers.AUX_COLLECTION, {})

    return jax.eval_shape(run)


def test_aux_logits_in_train_mode_only():
    variables, out, aux = output_shapes(train=True)
    assert "aux" in variables["params"]  # created by an eval-mode init too
    assert out.shape == (2, 10)
    (sown,) = aux["aux_logits"]
    assert (sown.shape, sown.dtype) == ((2, 10), jnp.float32)
    _, out, aux = output_shapes(train=False)
    assert out.shape == (2, 10) and aux == {}


def test_without_aux_head_and_feature_extractor():
    variables, out, aux = output_shapes(train=True, aux_logits=False)
    assert "aux" not in variables["params"] and aux == {} and out.shape == (2, 10)
    variables, out, aux = output_shapes(train=True, num_classes=0)
    assert not {"aux", "head"} & set(variables["params"])
    assert out.shape == (2, 2048) and aux == {}


def test_small_inputs_evaluate_but_cannot_train_the_aux_head():
    _, out, _ = output_shapes(train=True, res=SMALL, aux_logits=False)
    assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="299-pixel inputs.*aux_logits=False"):
        output_shapes(train=True, res=RES - 1)


@pytest.mark.torch
def test_param_counts_with_and_without_the_aux_head():
    torchvision = pytest.importorskip("torchvision")

    def torch_count(**kwargs):
        tv = torchvision.models.inception_v3(weights=None, init_weights=False, **kwargs)
        return sum(p.numel() for p in tv.parameters())

    assert param_count("inception_v3") == torch_count() == 27_161_264
    assert param_count("inception_v3", aux_logits=False) == torch_count(aux_logits=False)


def _calibrated_torchvision(torchvision):
    from tests.convert.torch_reference import build_torchvision

    return build_torchvision("inception_v3", torchvision, resolution=SMALL)


@pytest.mark.torch
def test_aux_head_matches_torchvision():
    """The parity test runs eval mode, where the auxiliary head is skipped; this compares it
    alone, on 17x17 maps, with converted weights."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from cnn_flax.convert import from_torchvision

    tv = _calibrated_torchvision(torchvision)
    variables = from_torchvision("inception_v3", tv.state_dict())
    maps = np.random.default_rng(0).standard_normal((2, 17, 17, 768)).astype(np.float32)
    with torch.no_grad():
        expected = tv.AuxLogits(torch.from_numpy(maps.transpose(0, 3, 1, 2))).numpy()

    unit = functools.partial(
        BasicConv,
        conv=layers.bind_conv(nn.Conv, dtype=jnp.float32),
        norm=layers.bind_norm(nn.BatchNorm, train=False, dtype=jnp.float32, epsilon=1e-3),
        activation=nn.relu,
    )
    aux = InceptionAux(1000, unit, unit, functools.partial(nn.Dense, dtype=jnp.float32))
    aux_vars = {k: v["aux"] for k, v in variables.items()}
    got = aux.apply(aux_vars, maps)
    scale = np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 0.1 * scale  # depends on the input
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)


@pytest.mark.torch
def test_published_layout_converts():
    """torchvision's published weights keep the auxiliary head (unless it is dropped after
    loading) and want ``transform_input=True``."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from cnn_flax.convert import from_torchvision
    from cnn_flax.weights import model_overrides

    tv = _calibrated_torchvision(torchvision)
    sd = tv.state_dict()
    variables = from_torchvision("inception_v3", sd)
    assert model_overrides("inception_v3", variables) == {"aux_logits": True}
    # Without the head (torchvision's aux_logits=False after loading): read off the weights.
    headless = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
    headless_vars = from_torchvision("inception_v3", headless)
    assert model_overrides("inception_v3", headless_vars) == {"aux_logits": False}
    assert "aux" not in headless_vars["params"]

    images = np.random.default_rng(1).standard_normal((2, SMALL, SMALL, 3)).astype(np.float32)
    tv.transform_input = True
    with torch.no_grad():
        expected = tv(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    model = create_model("inception_v3", transform_input=True)
    got = jax.jit(functools.partial(model.apply, train=False))(variables, images)
    scale = np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 0.1 * scale
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)


def test_recipe_is_the_papers_section_8():
    from cnn_flax import configs

    config = configs.get_config("inception_v3")
    assert (config.batch_size, config.data.image_size, config.num_epochs) == (32 * 50, 299, 100)
    opt = config.optimizer
    assert (opt.name, opt.eps, opt.rmsprop_decay, opt.tf_style_eps) == ("rmsprop", 1.0, 0.9, True)
    # lr 0.045 per update of the replicas' batches (no linear scaling), x0.94 every two epochs.
    assert (opt.lr, opt.lr_scaling) == (0.045, "none")
    sched = config.schedule
    assert (sched.name, sched.decay_rate, sched.decay_epochs, sched.warmup_epochs) == (
        "exponential",
        0.94,
        2.0,
        0.0,
    )
    assert (config.clip_grad_norm, config.label_smoothing, config.aux_loss_weight) == (
        2.0,
        0.1,
        0.4,
    )
    assert config.ema_decay is not None  # evaluation on a running average of the parameters
    assert config.target_top1 == 77.294  # torchvision's ported weights
