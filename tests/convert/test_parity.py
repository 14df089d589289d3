"""Numerical parity with torchvision: same weights, same images, same logits (float32, eval)."""

import jax
import numpy as np
import pytest

from cnn_flax.models import create_model, list_models, model_info
from tests.helpers import input_resolution

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from cnn_flax.convert import from_torchvision  # noqa: E402
from tests.convert.torch_reference import build_torchvision  # noqa: E402

PARITY_ATOL = 1e-4
WITH_TORCHVISION = [n for n in list_models() if model_info(n).torchvision]


def parity_error(name: str, *, batch: int = 2) -> float:
    tv = build_torchvision(name, torchvision)
    variables = from_torchvision(name, tv.state_dict())
    res = input_resolution(name)
    images = np.random.default_rng(0).standard_normal((batch, res, res, 3)).astype(np.float32)
    with torch.no_grad():
        expected = tv(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    model = create_model(name, num_classes=expected.shape[-1])
    got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
    return float(np.max(np.abs(got - expected)))


@pytest.mark.torch
@pytest.mark.parametrize("name", WITH_TORCHVISION)
def test_logits_match_torchvision(name):
    err = parity_error(name)
    print(f"parity {name}: max abs logit error {err:.3g}")
    assert err < PARITY_ATOL


@pytest.mark.torch
def test_leftover_keys_are_refused():
    tv = build_torchvision("alexnet", torchvision)
    sd = dict(tv.state_dict())
    sd["extra.weight"] = sd["features.0.weight"]
    with pytest.raises(ValueError, match="not used"):
        from_torchvision("alexnet", sd)


def test_model_without_torchvision_is_refused():
    names = [n for n in list_models() if not model_info(n).torchvision]
    if not names:
        pytest.skip("every registered model has a torchvision counterpart")
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        from_torchvision(names[0], {})
