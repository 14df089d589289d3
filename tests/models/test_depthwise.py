"""The depthwise and pointwise implementations equal XLA's convolution, forward and backward, and
the ``Conv`` module is nn.Conv with the same parameters."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, depthwise

TOLERANCE = {"float32": 2e-5, "float64": 1e-12}


def _conv_xla(x, kernel, *, strides, padding, groups):
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
        precision=jax.lax.Precision.HIGHEST,
    )


def _normal(seed: int, shape, dtype):
    # NumPy draws: a jax.random draw inside the compiled program triples its compile time here.
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _value_and_grads(fn, x, kernel, cotangent_seed: int = 0):
    """``fn(x, kernel)`` and its gradients for a random cotangent, in one compiled program."""
    out = jax.eval_shape(fn, x, kernel)
    dy = _normal(cotangent_seed, out.shape, out.dtype)

    @jax.jit
    def run(x, kernel, dy):
        y, vjp = jax.vjp(fn, x, kernel)
        return (y, *vjp(dy))

    return run(x, kernel, dy)


def _assert_close(got, want, tol):
    for g, w, what in zip(got, want, ("output", "input gradient", "kernel gradient")):
        assert g.shape == w.shape and g.dtype == w.dtype, what
        scale = float(jnp.max(jnp.abs(w)))
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=tol * scale, err_msg=what)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["symmetric", "SAME"])
def test_depthwise_shift_equals_grouped_convolution(dtype, kernel_size, strides, padding):
    # 10 pixels: at stride 2 TF's "SAME" pads one more pixel at the bottom/right than the top.
    with jax.enable_x64(dtype == "float64"):
        x = _normal(1, (2, 10, 10, 6), dtype)
        kernel = _normal(2, (kernel_size, kernel_size, 1, 6), dtype)
        half = kernel_size // 2
        pads = (
            ((half, half), (half, half))
            if padding == "symmetric"
            else depthwise.explicit_padding(
                "SAME", in_hw=(10, 10), kernel_hw=(kernel_size,) * 2, strides=(strides,) * 2
            )
        )
        if padding == "SAME" and strides == 2:
            assert pads[0][1] == pads[0][0] + 1  # the case the test is about
        s = (strides, strides)
        want = _value_and_grads(
            lambda x, k: _conv_xla(x, k, strides=s, padding=pads, groups=6), x, kernel
        )
        got = _value_and_grads(
            lambda x, k: depthwise.depthwise_shift(x, k, strides=s, padding=pads), x, kernel
        )
        _assert_close(got, want, TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("strides", [1, 2])
def test_pointwise_dot_equals_1x1_convolution(dtype, strides):
    with jax.enable_x64(dtype == "float64"):
        x = _normal(3, (2, 9, 9, 5), dtype)
        kernel = _normal(4, (1, 1, 5, 7), dtype)
        s = (strides, strides)
        want = _value_and_grads(
            lambda x, k: _conv_xla(x, k, strides=s, padding=((0, 0), (0, 0)), groups=1),
            x,
            kernel,
        )
        got = _value_and_grads(
            lambda x, k: depthwise.pointwise_dot(
                x, k, strides=s, precision=jax.lax.Precision.HIGHEST
            ),
            x,
            kernel,
        )
        _assert_close(got, want, TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("kernel_size", "strides"), [(3, 1), (3, 2), (7, 2)])
@pytest.mark.parametrize("padding", ["symmetric", "SAME"])
def test_conv_tap_filter_grad_equals_convolution(dtype, kernel_size, strides, padding):
    with jax.enable_x64(dtype == "float64"):
        x = _normal(5, (2, 10, 10, 3), dtype)
        kernel = _normal(6, (kernel_size, kernel_size, 3, 4), dtype)
        s = (strides, strides)
        half = kernel_size // 2
        pads = (
            ((half, half), (half, half))
            if padding == "symmetric"
            else depthwise.explicit_padding(
                "SAME", in_hw=(10, 10), kernel_hw=(kernel_size,) * 2, strides=s
            )
        )
        want = _value_and_grads(
            lambda x, k: _conv_xla(x, k, strides=s, padding=pads, groups=1), x, kernel
        )
        got = _value_and_grads(
            lambda x, k: depthwise.conv_tap_filter_grad(
                x, k, strides=s, padding=pads, precision=jax.lax.Precision.HIGHEST
            ),
            x,
            kernel,
        )
        _assert_close(got, want, TOLERANCE[dtype])


@pytest.mark.parametrize("grad_chunk", [1, 3])
def test_depthwise_kernel_gradient_in_chunks_equals_whole_batch(grad_chunk):
    """Chunk 3 of a batch of 4 is rounded down to 2, a divisor."""
    x = _normal(7, (4, 9, 9, 5), "float32")
    kernel = _normal(8, (3, 3, 1, 5), "float32")
    pads = ((1, 1), (1, 1))

    def shift(chunk):
        return lambda x, k: depthwise.depthwise_shift(
            x, k, strides=(2, 2), padding=pads, grad_chunk=chunk
        )

    _assert_close(
        _value_and_grads(shift(grad_chunk), x, kernel),
        _value_and_grads(shift(None), x, kernel),
        TOLERANCE["float32"],
    )
    scan = [
        e
        for e in jax.make_jaxpr(jax.grad(lambda k: shift(grad_chunk)(x, k).sum()))(kernel).eqns
        if e.primitive.name == "scan"
    ]
    assert len(scan) == 1 and scan[0].params["length"] == (4 if grad_chunk == 1 else 2)


def test_depthwise_shift_accumulates_bfloat16_in_float32():
    kx, kk = jax.random.split(jax.random.key(2))
    x = jax.random.normal(kx, (1, 8, 8, 4), jnp.bfloat16)
    kernel = jax.random.normal(kk, (5, 5, 1, 4), jnp.bfloat16)
    pads = ((2, 2), (2, 2))
    got = depthwise.depthwise_shift(x, kernel, strides=(1, 1), padding=pads)
    exact = _conv_xla(
        x.astype(jnp.float32), kernel.astype(jnp.float32), strides=(1, 1), padding=pads, groups=4
    )
    assert got.dtype == jnp.bfloat16
    # One bf16 rounding of the result (relative 2**-8), not one per partial sum.
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(exact), rtol=2**-8, atol=2**-8
    )


def _conv_primitives(fn, *args) -> list[dict]:
    eqns = jax.make_jaxpr(fn)(*args).jaxpr.eqns
    return [e.params for e in eqns if e.primitive.name == "conv_general_dilated"]


CASES = {
    # name: (constructor arguments, input channels, XLA convolutions in forward + gradients)
    "depthwise_3x3_stride2_same": (dict(kernel_size=(3, 3), strides=2, padding="SAME"), 8, 0),
    "depthwise_5x5_symmetric": (dict(kernel_size=(5, 5), padding=((2, 2), (2, 2))), 8, 0),
    "pointwise_stride2": (dict(kernel_size=(1, 1), strides=2, padding=((0, 0), (0, 0))), 6, 0),
    # taps: XLA's forward and input gradient, matrix products for the kernel gradient
    "dense_3x3": (dict(kernel_size=(3, 3), padding=((1, 1), (1, 1))), 16, 2),
    "dense_7x7_stride2": (dict(kernel_size=(7, 7), strides=2, padding=3), 16, 2),
    # an RGB stem: too few input channels for per-tap products, nn.Conv
    "rgb_stem_7x7_stride2": (dict(kernel_size=(7, 7), strides=2, padding=3), 3, 3),
    # grouped (not depthwise): nn.Conv, three XLA convolutions
    "grouped_3x3": (dict(kernel_size=(3, 3), padding=1, feature_group_count=2), 6, 3),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("use_bias", [False, True])
def test_conv_module_is_nn_conv_with_the_same_parameters(case, use_bias):
    kwargs, channels, xla_convs = CASES[case]
    if case.startswith("depthwise"):
        kwargs = dict(kwargs, feature_group_count=channels)
    features = channels if case.startswith("depthwise") else 4
    x = _normal(9, (2, 10, 10, channels), "float32")
    ref = nn.Conv(features, use_bias=use_bias, precision="highest", **kwargs)
    fast = depthwise.Conv(
        features, use_bias=use_bias, precision="highest", pointwise="dot", dense="taps", **kwargs
    )
    variables = ref.init(jax.random.key(4), x)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.key(4), x)) == jax.tree.map(
        jnp.shape, variables
    )
    if use_bias:  # a non-zero bias, so adding it is checked too
        variables["params"]["bias"] = jnp.arange(features, dtype=jnp.float32)

    def loss(module):
        return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))

    want = jax.jit(jax.value_and_grad(loss(ref), argnums=(0, 1)))(variables, x)
    got = jax.jit(jax.value_and_grad(loss(fast), argnums=(0, 1)))(variables, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=2e-5 * (1 + float(jnp.max(jnp.abs(w)))))
    grad_fn = jax.value_and_grad(loss(fast), argnums=(0, 1))
    assert len(_conv_primitives(grad_fn, variables, x)) == xla_convs


def test_conv_module_xla_implementations_are_nn_conv():
    x = jnp.ones((1, 6, 6, 4))
    fast = depthwise.Conv(4, (3, 3), feature_group_count=4, depthwise="xla", pointwise="xla")
    variables = fast.init(jax.random.key(0), x)
    (conv,) = _conv_primitives(lambda v, x: fast.apply(v, x), variables, x)
    assert conv["feature_group_count"] == 4


def test_conv_module_refuses_an_unknown_implementation():
    with pytest.raises(ValueError, match="depthwise='fast'.*choose one of"):
        depthwise.Conv(4, (3, 3), depthwise="fast").init(jax.random.key(0), jnp.ones((1, 4, 4, 4)))


def test_explicit_padding_refuses_non_zero_padding_modes():
    with pytest.raises(ValueError, match="'CIRCULAR' is not zero padding"):
        depthwise.explicit_padding("CIRCULAR", in_hw=(4, 4), kernel_hw=(3, 3), strides=(1, 1))


def test_circular_padding_falls_back_to_nn_conv():
    x = jax.random.normal(jax.random.key(5), (1, 6, 6, 3))
    ref = nn.Conv(3, (3, 3), feature_group_count=3, padding="CIRCULAR")
    fast = depthwise.Conv(3, (3, 3), feature_group_count=3, padding="CIRCULAR")
    variables = ref.init(jax.random.key(6), x)
    np.testing.assert_allclose(fast.apply(variables, x), ref.apply(variables, x), atol=1e-6)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "resnet50"])
def test_fast_conv_as_a_model_field_keeps_the_parameter_tree(name):
    fast_conv = functools.partial(depthwise.Conv, pointwise="dot", dense="taps")
    x = jnp.zeros((1, 32, 32, 3))

    def shapes(model):
        return jax.tree.map(
            jnp.shape, jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
        )

    ref = create_model(name, num_classes=10)
    assert shapes(create_model(name, num_classes=10, conv=fast_conv)) == shapes(ref)


def test_inverted_residual_block_with_fast_conv_equals_nn_conv():
    """A family block (expand, depthwise stride 2, SE, project, train-mode BN) built with either
    convolution. In float64: BatchNorm's backward pass cancels the float32 rounding of a changed
    summation order up to a percent of some small gradients, which would hide a real error."""
    from cnn_flax.models import layers
    from cnn_flax.models.inverted_residual import InvertedResidual

    def block(conv):
        return InvertedResidual(
            features=8,
            expand_features=24,
            kernel_size=5,
            strides=2,
            conv=layers.bind_conv(conv, dtype=jnp.float64, param_dtype=jnp.float64),
            norm=functools.partial(
                layers.bind_norm(nn.BatchNorm, train=True, dtype=jnp.float64),
                param_dtype=jnp.float64,
            ),
            activation=nn.silu,
            se_features=4,
        )

    fast_conv = functools.partial(depthwise.Conv, pointwise="dot", dense="taps")
    with jax.enable_x64(True):
        x = _normal(10, (2, 12, 12, 8), "float64")
        variables = block(nn.Conv).init(jax.random.key(1), x, train=True)

        def loss(conv):
            def f(params, x):
                v = {**variables, "params": params}
                y, _ = block(conv).apply(v, x, train=True, mutable=["batch_stats"])
                return jnp.sum(y**2)

            return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

        want = loss(nn.Conv)(variables["params"], x)
        got = loss(fast_conv)(variables["params"], x)
    # Some gradients are zero in exact arithmetic (the projection's BN shift): absolute
    # tolerance against the largest gradient anywhere.
    scale = max(float(np.max(np.abs(w))) for w in jax.tree.leaves(want))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.parametrize(
    ("batch", "size", "channels", "chunks"),
    [(4, 28, 3, 2), (3, 28, 16, 3), (2, 27, 16, 0)],  # 28 x 28 = PATCHES_MIN_OUT_PIXELS
)
def test_dense_kernel_gradient_from_chunked_patches_equals_xla(batch, size, channels, chunks):
    """Large maps take the im2col path (a scan over chunks of images, RGB stems included);
    smaller ones the per-tap products; both are XLA's kernel gradient, in float64."""
    assert depthwise.PATCHES_MIN_OUT_PIXELS == 28 * 28 and depthwise.PATCH_CHUNK == 2
    with jax.enable_x64(True):
        x = _normal(11, (batch, size, size, channels), "float64")
        kernel = _normal(12, (3, 3, channels, 5), "float64")
        pads = ((1, 1), (1, 1))

        def kernel_grad(conv):
            return jax.grad(lambda k: jnp.sum(jnp.sin(conv(x, k, strides=(1, 1), padding=pads))))

        ours = kernel_grad(depthwise.conv_tap_filter_grad)
        want = kernel_grad(lambda x, k, **kw: _conv_xla(x, k, groups=1, **kw))(kernel)
        np.testing.assert_allclose(ours(kernel), want, rtol=1e-10, atol=1e-10)
        scans = [e for e in jax.make_jaxpr(ours)(kernel).eqns if e.primitive.name == "scan"]
        assert [e.params["length"] for e in scans] == ([chunks] if chunks else [])


@pytest.mark.parametrize(("patch_chunk", "scans"), [(2, 1), (None, 0)])
def test_rgb_stem_on_a_large_map_takes_the_patch_path_only_with_a_chunk(patch_chunk, scans):
    x = jnp.ones((2, 28, 28, 3))
    conv = depthwise.Conv(4, (3, 3), padding=1, dense="taps", dense_patch_chunk=patch_chunk)
    variables = conv.init(jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(jax.grad(lambda v: jnp.sum(conv.apply(v, x))))(variables)
    assert sum(e.primitive.name == "scan" for e in jaxpr.jaxpr.eqns) == scans
