"""Numerical parity with torchvision: same weights, same images, same logits (eval mode).

The set-up is the issue's: torchvision's random initialisation with BatchNorm statistics moved
away from 0/1 (``torch_reference.build_torchvision``), both models in eval mode, float32, and
logits within 1e-4. Two kinds of network need more than that one comparison, because float32
rounding alone, torchvision's own, already exceeds 1e-4:

- deep nets (ResNet-101/152, EfficientNet-B0/B1, ...): then cnn_flax must be as close to
  torchvision as torchvision's float32 result is to its float64 one, and both computing in
  float64 must agree within 1e-4;
- chaotic random nets (EfficientNet-B3-B7), where torchvision's own float32 and float64 logits
  differ by more than 1% of their scale: float32 logits are then noise, so both in float64 must
  agree within 1e-4, and every block must agree in float32 when fed torchvision's own input to
  that block (``blockwise``).
"""

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, list_models, model_info
from tests.helpers import input_resolution

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from cnn_flax.convert import from_torchvision  # noqa: E402
from cnn_flax.weights import model_overrides  # noqa: E402
from tests.convert.blockwise import blockwise_errors  # noqa: E402
from tests.convert.torch_reference import build_torchvision  # noqa: E402

PARITY_ATOL = 1e-4
WITH_TORCHVISION = [n for n in list_models() if model_info(n).torchvision]
# The largest models (about a minute each on 2 CPU cores): marked slow, still run in CI.
# swin_v2_b: its float32 rounding exceeds 1e-4, so it also runs op by op in float64.
SLOW_PARITY = {f"efficientnet_b{i}" for i in (5, 6, 7)} | {"swin_v2_b"}


def parity_setup(name: str, *, batch: int = 2) -> dict:
    """The same weights and images for both: torchvision's logits in float32 and again computing
    in float64 (the exact result, to measure rounding against), and the converted variables."""
    res = input_resolution(name)
    tv = build_torchvision(name, torchvision, resolution=res)
    variables = from_torchvision(name, tv.state_dict())
    images = np.random.default_rng(0).standard_normal((batch, res, res, 3)).astype(np.float32)
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2))
    with torch.no_grad():
        torch32 = tv(nchw).numpy()
        torch64 = copy.deepcopy(tv).double()(nchw.double()).numpy()
    # What the converted weights show of the model they need (GoogLeNet's auxiliary heads,
    # ViT's position-embedding grid).
    model = create_model(name, num_classes=torch32.shape[-1], **model_overrides(name, variables))
    return {
        "torch32": torch32,
        "torch64": torch64,
        "variables": variables,
        "images": images,
        "model": model,
        "tv": tv,
    }


def ours_in_float32(setup: dict) -> np.ndarray:
    model = setup["model"]
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    return np.asarray(forward(setup["variables"], setup["images"]))


def ours_in_float64(name: str, variables: dict, images: np.ndarray, num_classes: int):
    """cnn_flax computing in float64 on the same (float32-representable) images as torchvision's
    float64 run. The model hands its logits out as float32, by design; the float64 logits are
    taken from its last Dense layer (the classifier) before that cast.

    Run op by op, not jitted: XLA:CPU has no float64 grouped convolution and rewrites each
    depthwise one into a dense convolution with a block-diagonal kernel (5x5x3456x3456 doubles,
    2.4 GB, in EfficientNet-B6). Jitted, all of them are live at once (15 GB peak for B6); op by
    op, one at a time (2.8 GB).
    """
    last_dense = []

    def record_dense(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            last_dense[:] = [out]
        return out

    with jax.enable_x64(True):
        model = create_model(
            name, num_classes=num_classes, dtype=jnp.float64, **model_overrides(name, variables)
        )
        v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
        with nn.intercept_methods(record_dense):
            model.apply(v64, images.astype(np.float64), train=False)
        (logits,) = last_dense
        assert logits.dtype == jnp.float64
        return np.asarray(logits)


# A random net is "chaotic" when torchvision's own float32 rounding moves its logits by more
# than this fraction of their scale: then float32 logits are noise and cannot show parity.
CHAOTIC_NOISE_FRACTION = 0.01
# Block-by-block, float32: error allowed relative to the block output's scale (at least 1).
BLOCK_RTOL = 1e-4


@pytest.mark.torch
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_PARITY else n for n in WITH_TORCHVISION],
)
def test_logits_match_torchvision(name):
    """Float32 logits within 1e-4 (the issue's set-up), or, where float32 rounding alone exceeds
    that, float64 logits within 1e-4 plus a float32 check sized to torchvision's own rounding."""
    setup = parity_setup(name)
    expected = setup["torch32"]
    # torchvision's own float32 rounding error, measured against its float64 result.
    torch_noise = float(np.max(np.abs(expected - setup["torch64"])))
    scale = float(np.max(np.abs(expected)))
    spread = float(np.max(np.abs(expected[0] - expected[1])))
    # The check means something only if the logits depend on the image.
    assert spread > 1e-2 * scale, f"{name}: logits barely depend on the input"
    report = f"parity {name}: torchvision float32 vs float64 {torch_noise:.3g}, logit scale "
    report += f"{scale:.3g}"
    chaotic = torch_noise >= CHAOTIC_NOISE_FRACTION * scale
    if not chaotic:
        err = float(np.max(np.abs(ours_in_float32(setup) - expected)))
        report += f"; float32 max abs logit error {err:.3g}"
        if err < PARITY_ATOL:
            print(report)
            return
        # Float32 rounding alone (torchvision's own) exceeds 1e-4 for deep nets, so no float32
        # implementation can agree that closely; be as close as torchvision is to the exact
        # result, and settle the question in float64 below.
        assert err < 4 * torch_noise, report
    # Computing in float64 removes the rounding: there both must agree within 1e-4. A structural
    # difference would not shrink.
    ours64 = ours_in_float64(name, setup["variables"], setup["images"], expected.shape[-1])
    err64 = float(np.max(np.abs(ours64 - setup["torch64"])))
    report += f"; float64 max abs logit error {err64:.3g}"
    assert err64 < PARITY_ATOL, report
    if chaotic:
        # Float32 logits of a chaotic random net are rounding noise (comparing them end to end
        # shows nothing). Check every block in float32 instead, each fed torchvision's own input.
        errors = blockwise_errors(
            model_info(name).family,
            setup["model"],
            setup["variables"],
            setup["tv"],
            setup["images"],
        )
        worst, (block_err, block_scale) = max(
            errors.items(), key=lambda kv: kv[1][0] / max(1.0, kv[1][1])
        )
        rel = block_err / max(1.0, block_scale)
        report += (
            f"; chaotic, so float32 block by block ({len(errors)} blocks): worst {worst}, "
            f"{block_err:.3g} on outputs up to {block_scale:.3g} (relative {rel:.2g})"
        )
        assert rel < BLOCK_RTOL, report
    print(report)


@pytest.mark.torch
def test_float64_and_blockwise_checks_find_a_planted_bug():
    """The two checks that stand in for float32 logits on chaotic nets must be able to fail: a
    spatially flipped depthwise kernel, a typical conversion slip, in one block of B0."""
    setup = parity_setup("efficientnet_b0")
    params = setup["variables"]["params"]
    kernel = params["stage4_block1"]["depthwise"]["conv"]["kernel"]
    params["stage4_block1"]["depthwise"]["conv"]["kernel"] = kernel[::-1, ::-1]

    ours64 = ours_in_float64("efficientnet_b0", setup["variables"], setup["images"], 1000)
    assert np.max(np.abs(ours64 - setup["torch64"])) > 100 * PARITY_ATOL
    errors = blockwise_errors(
        "efficientnet", setup["model"], setup["variables"], setup["tv"], setup["images"]
    )
    relative = {name: err / max(1.0, scale) for name, (err, scale) in errors.items()}
    assert [name for name, rel in relative.items() if rel >= BLOCK_RTOL] == ["stage4_block1"]


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
