"""Numerical parity with torchvision: same weights, same images, same logits (float32, eval)."""

import copy

import jax
import jax.numpy as jnp
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


def parity_logits(name: str, *, batch: int = 2) -> dict[str, np.ndarray]:
    """Logits of the same weights on the same images: cnn_flax and torchvision in float32, both
    again computing in float64 (cnn_flax only where float32 cannot settle the question)."""
    res = input_resolution(name)
    tv = build_torchvision(name, torchvision, resolution=res)
    variables = from_torchvision(name, tv.state_dict())
    images = np.random.default_rng(0).standard_normal((batch, res, res, 3)).astype(np.float32)
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2))
    with torch.no_grad():
        torch32 = tv(nchw).numpy()
        torch64 = copy.deepcopy(tv).double()(nchw.double()).numpy()
    model = create_model(name, num_classes=torch32.shape[-1])
    ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
    return {"ours": ours, "torch32": torch32, "torch64": torch64, "variables": variables}


def ours_in_float64(name: str, variables: dict, num_classes: int, *, batch: int = 2):
    """cnn_flax computing in float64 (its logits still leave as float32, by design)."""
    res = input_resolution(name)
    images = np.random.default_rng(0).standard_normal((batch, res, res, 3))
    with jax.enable_x64(True):
        model = create_model(name, num_classes=num_classes, dtype=jnp.float64)
        v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
        return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(v64, images))


# Random EfficientNet-B1 and larger are ill-conditioned in this set-up: with fresh BatchNorm
# statistics their logits do not depend on the input at all, and with calibrated statistics
# torchvision's own float32 and float64 results differ by up to a fifth of the logits, so no
# tolerance separates a bug from rounding. Open problem (issue 2): a better-conditioned set-up.
ILL_CONDITIONED = {f"efficientnet_b{i}" for i in (1, 3, 4, 5, 6, 7)}


@pytest.mark.torch
@pytest.mark.parametrize("name", WITH_TORCHVISION)
def test_logits_match_torchvision(name):
    if name in ILL_CONDITIONED:
        pytest.skip(f"{name}: random-weight parity is ill-conditioned (see ILL_CONDITIONED)")
    logits = parity_logits(name)
    expected = logits["torch32"]
    err = float(np.max(np.abs(logits["ours"] - expected)))
    # torchvision's own float32 rounding error, measured against its float64 result.
    torch_noise = float(np.max(np.abs(expected - logits["torch64"])))
    scale = float(np.max(np.abs(expected)))
    spread = float(np.max(np.abs(expected[0] - expected[1])))
    report = (
        f"parity {name}: max abs logit error {err:.3g} (torchvision float32 vs float64: "
        f"{torch_noise:.3g}; logit scale {scale:.3g})"
    )
    # The check means something only if the logits depend on the image.
    assert spread > 1e-2 * scale, f"{name}: logits barely depend on the input"
    if err >= PARITY_ATOL:
        # Deep nets with large logits: float32 rounding alone (torchvision's own, above) exceeds
        # 1e-4, so no float32 implementation can agree that closely. Then (a) we must be as close
        # to torchvision as its float32 result is to the exact one, and (b) the gap must shrink
        # when both compute in float64: a structural difference would not.
        ours64 = ours_in_float64(name, logits["variables"], expected.shape[-1])
        err64 = float(np.max(np.abs(ours64 - logits["torch64"])))
        report += f"; both in float64: {err64:.3g}"
        assert err < 4 * torch_noise, report
        assert err64 < err / 4, report
    print(report)


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
