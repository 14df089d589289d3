"""Numerical parity with torchvision: same weights, same images, same logits (eval mode), and
the same feature maps at the torchvision nodes each family names (``create_feature_extractor``,
compared in the same pass: ``create_model(..., return_features=True)``).

The set-up is the issue's: torchvision's random initialisation with BatchNorm statistics moved
away from 0/1 (``torch_reference.build_torchvision``), both models in eval mode, float32, and
logits within 1e-4. Three kinds of network need more than that one comparison, because
rounding alone, torchvision's own, already exceeds 1e-4:

- deep nets (ResNet-101/152, EfficientNet-B0/B1, ...): then cnn_flax must be as close to
  torchvision as torchvision's float32 result is to its float64 one, and both computing in
  float64 must agree within 1e-4;
- chaotic random nets (EfficientNet-B3-B7), where torchvision's own float32 and float64 logits
  differ by more than 1% of their scale: float32 logits are then noise, so both in float64 must
  agree within 1e-4, and every block must agree in float32 when fed torchvision's own input to
  that block (``blockwise``);
- nets chaotic even in float64 (EfficientNetV2-L: an input change of a few float64 ulps moves
  torchvision's own float64 logits by over 10% of their scale): float64 logits are then noise
  too, so they need only agree as closely as torchvision's float64 result agrees with itself
  under that change, and the block-by-block check carries the proof.
"""

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, list_models, model_info
from cnn_flax.models.features import tokens_to_map
from tests.helpers import input_resolution, zoo_params

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402

from cnn_flax.convert import from_torchvision  # noqa: E402
from cnn_flax.weights import model_overrides  # noqa: E402
from tests.convert.blockwise import blockwise_errors  # noqa: E402
from tests.convert.torch_reference import build_torchvision  # noqa: E402

PARITY_ATOL = 1e-4
WITH_TORCHVISION = [n for n in list_models() if model_info(n).torchvision]
# The largest models (about a minute each on 2 CPU cores) and others past ~30 s whose blocks a
# faster test already checks (DenseNet-161/169; Inception v3 at 75 pixels in
# tests/models/test_inception.py): marked slow, still run in CI.
# swin_v2_b: its float32 rounding exceeds 1e-4, so it also runs op by op in float64.
# efficientnet_v2_m/l: chaotic at 32 px, so float64 op by op and block by block as well.
SLOW_PARITY = frozenset(
    {f"efficientnet_b{i}" for i in (5, 6, 7)}
    | {"densenet161", "densenet169", "inception_v3", "swin_v2_b"}
    | {"regnet_y_128gf", "efficientnet_v2_m", "efficientnet_v2_l"}
)


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
        "name": name,
        "torch32": torch32,
        "torch64": torch64,
        "variables": variables,
        "images": images,
        "model": model,
        "tv": tv,
    }


def ours_in_float32(setup: dict) -> np.ndarray:
    """Our logits in float32; the feature maps of the same pass go to ``setup["maps"]``."""
    model = setup["model"]
    with_features = create_model(
        setup["name"],
        num_classes=model.num_classes,
        return_features=True,
        **model_overrides(setup["name"], setup["variables"]),
    )
    forward = jax.jit(lambda v, x: with_features.apply(v, x, train=False))
    logits, setup["maps"] = forward(setup["variables"], setup["images"])
    setup["levels"] = with_features.levels
    return np.asarray(logits)


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


# Feature maps: largest error allowed relative to the map's largest value (or 1).
FEATURE_RTOL = 1e-4


def torchvision_maps(tv, images: np.ndarray, levels, *, family: str) -> dict[str, np.ndarray]:
    """torchvision's outputs at the levels' nodes (``create_feature_extractor``), as NHWC maps:
    NCHW moved; ViT's token sequence laid out on its grid; Swin's maps are NHWC already."""
    nodes = [level.torchvision for level in levels]
    extractor = create_feature_extractor(tv, return_nodes={node: node for node in nodes})
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2))
    with torch.no_grad():
        out = extractor(nchw.to(next(tv.parameters()).dtype))
    maps = {}
    for level in levels:
        theirs = out[level.torchvision].numpy()
        if level.tokens:
            grid = images.shape[1] // level.reduction
            theirs = np.asarray(tokens_to_map(theirs, height=grid, width=grid))
        elif family != "swin":
            theirs = theirs.transpose(0, 2, 3, 1)
        maps[level.torchvision] = theirs
    return maps


def check_feature_maps(setup: dict) -> str:
    """Our feature maps (of :func:`ours_in_float32`'s pass) against torchvision's at the nodes
    the family names, every level: within ``FEATURE_RTOL`` of the map's scale, or (deep nets,
    as for the logits) within 4x torchvision's own float32 rounding of that map. Returns the
    worst level for the report."""
    family = model_info(setup["name"]).family
    theirs = torchvision_maps(setup["tv"], setup["images"], setup["levels"], family=family)
    errors = {}
    for level, ours in zip(setup["levels"], setup["maps"], strict=True):
        expected = theirs[level.torchvision]
        assert ours.shape == expected.shape, (level, ours.shape, expected.shape)
        err = float(np.max(np.abs(np.asarray(ours, np.float64) - expected)))
        errors[level.torchvision] = (err, float(np.max(np.abs(expected))))
    rel = {node: err / max(1.0, scale) for node, (err, scale) in errors.items()}
    worst = max(rel, key=rel.get)
    report = (
        f"feature maps ({len(errors)} levels) worst {worst}: max abs error "
        f"{errors[worst][0]:.3g} on values up to {errors[worst][1]:.3g} (relative {rel[worst]:.2g})"
    )
    if rel[worst] >= FEATURE_RTOL:
        tv64 = copy.deepcopy(setup["tv"]).double()
        exact = torchvision_maps(tv64, setup["images"], setup["levels"], family=family)
        for node, (err, _) in errors.items():
            noise = float(np.max(np.abs(theirs[node] - exact[node])))
            assert rel[node] < FEATURE_RTOL or err < 4 * noise, f"{node}: {report}, {noise=}"
    return report


# Relative input change of a few float64 ulps (1 ulp is 1.1e-16 relative), to measure how much a
# net amplifies float64 rounding.
ULP_PERTURBATION = 1e-15


def torch_float64_noise(setup: dict) -> float:
    """How far torchvision's float64 logits move when its input moves by a few float64 ulps: the
    float64 rounding noise of a net chaotic enough to amplify it."""
    nchw = torch.from_numpy(setup["images"].transpose(0, 3, 1, 2)).double()
    noise = torch.randn(nchw.shape, generator=torch.Generator().manual_seed(0), dtype=nchw.dtype)
    with torch.no_grad():
        tv64 = copy.deepcopy(setup["tv"]).double()
        moved = tv64(nchw * (1 + ULP_PERTURBATION * noise)).numpy()
    return float(np.max(np.abs(moved - setup["torch64"])))


# A random net is "chaotic" when torchvision's own float32 rounding moves its logits by more
# than this fraction of their scale: then float32 logits are noise and cannot show parity.
CHAOTIC_NOISE_FRACTION = 0.01
# Block-by-block, float32: error allowed relative to the block output's scale (at least 1).
BLOCK_RTOL = 1e-4


@pytest.mark.torch
@pytest.mark.parametrize(
    "name",
    zoo_params(WITH_TORCHVISION, slow=SLOW_PARITY),
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
        report += "; " + check_feature_maps(setup)
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
    if err64 >= PARITY_ATOL and chaotic:
        noise64 = torch_float64_noise(setup)
        report += f"; torchvision float64, input moved {ULP_PERTURBATION:g}: {noise64:.3g}"
        # Chaotic in float64 too only when that change alone exceeds the tolerance. End to end
        # this bounds gross errors only; the block-by-block check below is the proof.
        assert noise64 >= PARITY_ATOL and err64 < 4 * noise64, report
    else:
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
