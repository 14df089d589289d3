"""FLOP counts from XLA's cost analysis, checked against known figures."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnn_flax.perf import flops
from tests.helpers import reference_rows


def test_unpadded_conv_counts_two_flops_per_mac():
    # 3x3 conv, 4 -> 8 channels, 10x10 input, no padding: 8x8 outputs x 8 x (3*3*4) MACs.
    conv = nn.Conv(8, (3, 3), padding="VALID", use_bias=False)
    x = jax.ShapeDtypeStruct((1, 10, 10, 4), jnp.float32)
    params = jax.eval_shape(conv.init, jax.random.key(0), x)
    lowered = jax.jit(conv.apply).lower(params, x)
    assert flops.cost_flops(lowered) == 2 * (8 * 8) * 8 * (3 * 3 * 4)


@pytest.mark.parametrize(("name", "rel_tol"), [("resnet50", 0.05), ("alexnet", 0.10)])
def test_forward_flops_match_torchvision_gmacs(name, rel_tol):
    # torchvision's "GFLOPS" column counts multiply-accumulates, padded taps included; XLA counts
    # two FLOPs per MAC on real pixels only (AlexNet's small 13x13 maps lose ~8% to padding).
    row = reference_rows().get(name)
    if row is None:
        pytest.skip("shared/reference/torchvision_models.csv not available")
    expected = 2e9 * float(row["gmacs"])
    got = flops.forward_flops(name)
    assert got == pytest.approx(expected, rel=rel_tol), f"{name}: {got / 1e9:.3f} GFLOPs"


def test_forward_flops_is_per_image():
    one = flops.forward_flops("resnet20", resolution=32, batch=1)
    four = flops.forward_flops("resnet20", resolution=32, batch=4)
    assert four == pytest.approx(one, rel=1e-4)  # a few batch-independent ops
    # Four times the pixels; a bit more than 4x, as padded border taps are a smaller share.
    larger = flops.forward_flops("resnet20", resolution=64)
    assert 4 * one < larger < 4.3 * one
