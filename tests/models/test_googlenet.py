"""GoogLeNet: auxiliary outputs, the naive Inception option, ceil-mode pools, and torchvision's
published-weights layout (no auxiliary heads, ``transform_input=True``).

``googlenet_naive`` has no paper or torchvision figure; its parameter count is checked against
arithmetic on the Table 1 spec (test_param_counts_match_spec_arithmetic), arithmetic that is
first checked on the reduced module against torchvision's 13,004,888.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, layers
from cnn_flax.models.googlenet import GOOGLENET, max_pool_ceil
from tests.helpers import param_count

RES = 32


def output_shapes(*, train: bool, **overrides):
    """Parameter shapes, output shapes and the sown auxiliary logits' shapes of GoogLeNet,
    traced without compiling or computing."""
    model = create_model("googlenet", **{"num_classes": 10, **overrides})
    x = jnp.zeros((2, RES, RES, 3))

    def run():
        variables = model.init(jax.random.key(0), x, train=False)
        if not train:
            return variables, model.apply(variables, x, train=False), ()
        out, updates = model.apply(
            variables,
            x,
            train=True,
            mutable=["batch_stats", layers.AUX_COLLECTION],
            rngs={"dropout": jax.random.key(1)},
        )
        return variables, out, layers.aux_outputs(updates)

    return jax.eval_shape(run)


def test_aux_outputs_in_train_mode_only():
    variables, out, aux = output_shapes(train=True)
    # Initialised in eval mode, the auxiliary heads still get parameters.
    assert {"aux1", "aux2"} <= set(variables["params"])
    # The main logits come back as in every mode; the two auxiliary ones are sown.
    assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (2, 10)
    assert len(aux) == 2
    for logits in aux:
        assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    _, out, aux = output_shapes(train=False)
    assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (2, 10) and aux == ()


def test_without_aux_heads():
    variables, out, aux = output_shapes(train=True, aux_logits=False)
    assert not {"aux1", "aux2"} & set(variables["params"])
    assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (2, 10) and aux == ()


def test_feature_extractor_has_no_aux_heads():
    variables, out, aux = output_shapes(train=True, num_classes=0)
    assert not {"aux1", "aux2", "head"} & set(variables["params"])
    assert out.shape == (2, 1024) and aux == ()


def test_torchvision_defaults():
    model = create_model("googlenet")
    assert (model.aux_logits, model.transform_input) == (True, False)
    assert (model.dropout, model.aux_dropout) == (0.2, 0.7)
    # torchvision's published weights: no auxiliary heads.
    assert param_count("googlenet", aux_logits=False) == 6_624_904


def spec_param_count(*, naive: bool, num_classes: int = 1000, branch3_kernel: int = 3) -> int:
    """GoogLeNet's parameters from Table 1, counting every conv as kernel + BN scale and bias."""

    def conv_bn(cin: int, cout: int, k: int) -> int:
        return k * k * cin * cout + 2 * cout

    def dense(cin: int, cout: int) -> int:
        return cin * cout + cout

    total = conv_bn(3, 64, 7) + conv_bn(64, 64, 1) + conv_bn(64, 192, 3)
    cin, widths = 192, {}
    for s, stage in enumerate(GOOGLENET, start=3):
        for j, spec in enumerate(stage):
            if naive:
                total += conv_bn(cin, spec.conv1x1, 1) + conv_bn(cin, spec.conv3x3, 3)
                total += conv_bn(cin, spec.conv5x5, branch3_kernel)
                cin += spec.conv1x1 + spec.conv3x3 + spec.conv5x5  # the pooled input passes
            else:
                total += conv_bn(cin, spec.conv1x1, 1)
                total += conv_bn(cin, spec.reduce3x3, 1) + conv_bn(spec.reduce3x3, spec.conv3x3, 3)
                total += conv_bn(cin, spec.reduce5x5, 1)
                total += conv_bn(spec.reduce5x5, spec.conv5x5, branch3_kernel)
                total += conv_bn(cin, spec.pool_proj, 1)
                cin = spec.conv1x1 + spec.conv3x3 + spec.conv5x5 + spec.pool_proj
            widths[f"{s}{'abcde'[j]}"] = cin
    for after in ("4a", "4d"):
        total += conv_bn(widths[after], 128, 1) + dense(128 * 4 * 4, 1024)
        total += dense(1024, num_classes)
    return total + dense(cin, num_classes)


def test_param_counts_match_spec_arithmetic():
    assert spec_param_count(naive=False) == 13_004_888  # the arithmetic, against torchvision
    assert param_count("googlenet") == 13_004_888
    assert param_count("googlenet_naive") == spec_param_count(naive=True)
    assert param_count("googlenet", branch3_kernel_size=5) == spec_param_count(
        naive=False, branch3_kernel=5
    )


def test_naive_module_widths():
    model = create_model("googlenet", inception_module="naive")
    params = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, RES, RES, 3)), train=False)
    )["params"]
    assert set(params["inception3a"]) == {"branch1", "branch2", "branch3"}
    # inception3a's output: 64 + 128 + 32 convolution channels + its 192 input channels.
    assert params["inception3b"]["branch1"]["conv"]["kernel"].shape == (1, 1, 416, 128)
    assert params["head"]["kernel"].shape == (4944, 1000)


def test_unknown_inception_module_is_refused():
    model = create_model("googlenet", inception_module="inverted")
    with pytest.raises(ValueError, match="'naive'"):
        model.init(jax.random.key(0), jnp.zeros((1, RES, RES, 3)), train=False)


@pytest.mark.torch
@pytest.mark.parametrize(
    "size, window, stride, padding",
    [(n, 3, 2, 0) for n in (7, 8, 15, 16)] + [(7, 2, 2, 0), (8, 2, 2, 0), (7, 3, 1, 1)],
)
def test_max_pool_ceil_matches_torch(size, window, stride, padding):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((1, size, size + 1, 2)).astype(np.float32)
    pool = torch.nn.MaxPool2d(window, stride, padding=padding, ceil_mode=True)
    expected = pool(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(max_pool_ceil(jnp.asarray(x), window, stride=stride, padding=padding))
    np.testing.assert_array_equal(got, expected)


def calibrated_torchvision_googlenet(torch, torchvision, **kwargs):
    """torchvision's GoogLeNet with random BN affine parameters and data-derived statistics.

    The generic parity test's random running statistics do not suit GoogLeNet: through 22 layers
    of N(0, 0.01) weights the signal dies and the logits no longer depend on the input. Running
    statistics measured on a batch keep every layer normalised, so the comparison sees the input.
    """
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(weights=None, init_weights=True, **kwargs)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.75, 1.25)
                m.bias.normal_(0.0, 0.1)
                m.reset_running_stats()
                m.momentum = None  # a cumulative average: one batch sets the statistics
        tv.train()
        tv(torch.randn(8, 3, RES, RES))
    return tv.eval()


@pytest.mark.torch
def test_published_layout_converts():
    """torchvision's published weights have no auxiliary heads and want transform_input=True."""
    torchvision = pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    from cnn_flax.convert import from_torchvision

    overrides = {"aux_logits": False, "transform_input": True}
    tv = calibrated_torchvision_googlenet(torch, torchvision, **overrides)
    sd = tv.state_dict()
    assert not any(k.startswith("aux") for k in sd)
    with pytest.raises(ValueError, match="missing"):
        # Forcing the auxiliary heads on: the shapes do not fit.
        from_torchvision("googlenet", sd, aux_logits=True)
    # The missing heads are read off the state dict.
    variables = from_torchvision("googlenet", sd)

    images = np.random.default_rng(0).standard_normal((2, RES, RES, 3)).astype(np.float32)
    for transform_input in (True, False):
        tv.transform_input = transform_input
        with torch.no_grad():
            expected = tv(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
        scale = np.abs(expected).max()
        # The logits must depend on the image, or the comparison proves little.
        assert np.abs(expected[0] - expected[1]).max() > 0.1 * scale
        model = create_model("googlenet", aux_logits=False, transform_input=transform_input)
        got = jax.jit(functools.partial(model.apply, train=False))(variables, images)
        # float32 rounding alone reaches ~1e-5 of the scale through 22 normalised layers
        # (torchvision's own float32 logits differ from its float64 ones that much).
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)
