"""The padding switch of the shared conv (``layers.bind_conv(..., padding=...)``) against the two
references it must reproduce: TensorFlow's ``"SAME"`` and torch's symmetric ``padding=k // 2``."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from cnn_flax.models import create_model, layers, model_info

tf = pytest.importorskip("tensorflow")

CASES = [  # (input size, kernel, stride): even and odd sizes, where TF's split differs
    (size, kernel, stride) for size in (7, 8, 16) for kernel in (1, 3, 5) for stride in (1, 2)
]


def _bound_conv(padding: str, *, features: int, kernel: int, stride: int, groups: int = 1):
    conv = layers.bind_conv(nn.Conv, dtype=np.float32, padding=padding)

    class Wrapper(nn.Module):
        @nn.compact
        def __call__(self, x):
            return conv(
                features, (kernel, kernel), strides=(stride, stride), feature_group_count=groups
            )(x)

    return Wrapper()


def _apply(module, x, kernel_hwio):
    variables = {"params": {"Conv_0": {"kernel": kernel_hwio}}}
    return np.asarray(module.apply(variables, x))


@pytest.mark.parametrize(("size", "kernel", "stride"), CASES)
def test_tf_same_equals_tensorflow(size, kernel, stride):
    rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
    x = rng.standard_normal((2, size, size, 3)).astype(np.float32)
    w = rng.standard_normal((kernel, kernel, 3, 4)).astype(np.float32)
    ours = _apply(_bound_conv("tf_same", features=4, kernel=kernel, stride=stride), x, w)
    theirs = tf.nn.conv2d(x, w, strides=stride, padding="SAME").numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)

    # Depthwise, as MobileNet/EfficientNet use it: TF's depthwise kernel is [kh, kw, in, 1].
    wd = rng.standard_normal((kernel, kernel, 1, 3)).astype(np.float32)
    ours = _apply(_bound_conv("tf_same", features=3, kernel=kernel, stride=stride, groups=3), x, wd)
    theirs = tf.nn.depthwise_conv2d(
        x, np.transpose(wd, (0, 1, 3, 2)), strides=(1, stride, stride, 1), padding="SAME"
    ).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_tf_same_differs_from_symmetric_where_tensorflow_pads_bottom_right():
    """At stride 2 on an even input TF pads (0, 1); symmetric padding (1, 1) shifts every output
    by one pixel. The two must then differ, or the test above could not tell them apart."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 8, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    same = _apply(_bound_conv("tf_same", features=4, kernel=3, stride=2), x, w)
    sym = _apply(_bound_conv("symmetric", features=4, kernel=3, stride=2), x, w)
    assert same.shape == sym.shape == (1, 4, 4, 4)
    assert np.max(np.abs(same - sym)) > 0.1


@pytest.mark.torch
@pytest.mark.parametrize(("size", "kernel", "stride"), CASES)
def test_symmetric_equals_torch(size, kernel, stride):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(size + kernel + stride)
    x = rng.standard_normal((2, size, size, 3)).astype(np.float32)
    w = rng.standard_normal((kernel, kernel, 3, 4)).astype(np.float32)
    ours = _apply(_bound_conv("symmetric", features=4, kernel=kernel, stride=stride), x, w)
    theirs = torch.nn.functional.conv2d(
        torch.from_numpy(x).permute(0, 3, 1, 2),
        torch.from_numpy(np.transpose(w, (3, 2, 0, 1)).copy()),
        stride=stride,
        padding=kernel // 2,
    )
    np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-5, rtol=0)


def test_explicit_padding_wins_over_the_mode():
    conv = layers.bind_conv(nn.Conv, dtype=np.float32, padding="tf_same")
    module = conv(4, (3, 3), strides=(2, 2), padding="VALID")
    assert module.padding == "VALID"
    assert conv(4, (3, 3)).padding == "SAME"
    sym = layers.bind_conv(nn.Conv, dtype=np.float32)
    assert sym(4, (5, 5), kernel_dilation=2).padding == ((4, 4), (4, 4))


def test_unknown_padding_is_refused():
    with pytest.raises(ValueError, match="padding='same'.*symmetric"):
        layers.bind_conv(nn.Conv, dtype=np.float32, padding="same")


# The families whose reference weights come from TensorFlow pad like it by default; those that
# must reproduce torchvision pad symmetrically. Same field name everywhere.
DEFAULT_PADDING = {
    "efficientnet_b0": "symmetric",
    "efficientnet_lite0": "tf_same",
    "efficientnet_lite4": "tf_same",
    "mobilenet_v1": "tf_same",
    "mobilenet_v1_050": "tf_same",
    "mobilenet_v2": "symmetric",
    "mobilenet_v3_large": "symmetric",
    "mobilenet_v3_small": "symmetric",
}


@pytest.mark.parametrize(("name", "padding"), DEFAULT_PADDING.items())
def test_family_default_padding(name, padding):
    assert create_model(name).padding == padding
    # The torchvision-parity models are exactly those that pad symmetrically.
    assert (model_info(name).torchvision is not None) == (padding == "symmetric")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v1", "mobilenet_v3_small"])
def test_padding_reaches_every_convolution(name):
    """Every convolution of the model (stem, depthwise, pointwise, ...) pads by the field."""
    seen = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        # Squeeze-and-excitation's 1x1 convolutions see a 1x1 map: nothing to pad.
        conv_call = isinstance(module, nn.Conv) and context.method_name == "__call__"
        if conv_call and module.name not in ("fc1", "fc2"):
            seen.append((module.kernel_size, module.padding))
        return next_fun(*args, **kwargs)

    for padding in layers.PADDINGS:
        seen.clear()
        model = create_model(name, padding=padding)
        init = functools.partial(model.init, jax.random.key(0), train=False)
        with nn.intercept_methods(record):
            jax.eval_shape(init, np.zeros((1, 32, 32, 3), np.float32))
        kernels = {k for k, _ in seen}
        assert (3, 3) in kernels and (1, 1) in kernels, kernels
        for kernel, got in seen:
            assert got == layers.conv_padding(kernel, padding=padding), (padding, kernel, got)
