"""Convolution implementations chosen by measurement, behind one drop-in ``Conv`` module.

Depthwise convolutions (one k x k filter per channel; Sifre 2014, Howard et al. 2017) carry
little arithmetic but are the core of MobileNet and EfficientNet. XLA lowers
``lax.conv_general_dilated(feature_group_count=C)`` to a grouped convolution whose gradients are
slow on several backends: JAX users report the backward pass at dense-convolution cost on GPUs
(jax issues #13800, #23713, #26266), and on XLA:CPU (jaxlib 0.10) both directions ran 10-40x
slower than PyTorch's on the same shapes. :func:`depthwise_shift` computes the same sum as k*k
shifted, strided slices of the padded input, each scaled by one tap of the kernel, with a
hand-written backward pass of the same kind.

Dense convolutions: XLA:CPU computes a kernel gradient as a convolution whose window is the
whole feature map, after transposing both operands, which made it the slowest part of a
ResNet-50 train step at 224 pixels. :func:`pointwise_dot` writes a 1x1 convolution as a matrix
product over channels, whose gradients are matrix products too; :func:`conv_tap_filter_grad`
keeps XLA's convolution for a k x k kernel's forward and input gradient and computes its kernel
gradient as matrix products: one per chunk of images over their im2col patches on large maps,
one per tap on small ones. ``benchmarks/RESULTS.md`` has the measurements.

:class:`Conv` is ``flax.linen.Conv`` with fields that pick the implementation for each case; a
call none of them applies to is ``nn.Conv`` itself. The parameters (``kernel`` of shape
``[kh, kw, C_in / groups, C_out]`` and ``bias``) are nn.Conv's, so checkpoints move between the
implementations unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# "xla": lax.conv_general_dilated(feature_group_count=C); "shift": depthwise_shift.
DEPTHWISE_IMPLS = ("xla", "shift")
# "xla": lax.conv_general_dilated; "dot": pointwise_dot.
POINTWISE_IMPLS = ("xla", "dot")
# "xla": lax.conv_general_dilated; "taps": conv_tap_filter_grad.
DENSE_IMPLS = ("xla", "taps")
# "xla": lax.conv_general_dilated; "local": the same, per device on its shard of the batch
# (batch_local_grouped_conv).
GROUPED_IMPLS = ("xla", "local")
# The mesh axis a batch is split along in data-parallel training (cnn_flax.parallel.DATA_AXIS
# names the same axis; a test keeps the two equal, since models sit below the training code).
BATCH_AXIS = "data"

# Below this many input channels (an RGB stem) the k*k per-tap products are too thin: ResNet-50's
# 7x7 stem kernel gradient took 590 ms that way against XLA's 309 ms (batch 16, 2 CPU cores).
TAPS_MIN_IN_FEATURES = 16
# From this many output pixels per image (28 x 28) a k x k kernel gradient is computed from the
# im2col patches of PATCH_CHUNK images at a time (the default of ``Conv.dense_patch_chunk``), one
# matrix product per chunk: the per-tap
# products then read k*k strided copies of the whole batch's feature map, which no cache holds.
# ResNet-50 at 224 px, batch 16, 2 shared CPU cores (benchmarks/RESULTS.md): 3x3 64 @56 231 ms
# against 389 (per tap) and 276 (XLA); the 7x7 stem 282 against 312 (XLA). Smaller maps fit in
# cache and stay per tap (3x3 512 @7: 73 ms per tap, 84 in chunks).
PATCHES_MIN_OUT_PIXELS = 28 * 28
PATCH_CHUNK = 2

Pads = tuple[tuple[int, int], tuple[int, int]]
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def explicit_padding(
    padding: str | int | Sequence[int | tuple[int, int]],
    *,
    in_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    strides: tuple[int, int],
) -> Pads:
    """``((top, bottom), (left, right))`` for a 2-D convolution's padding argument.

    Accepts what ``nn.Conv`` accepts for zero padding: ``"SAME"`` (TF's rule: the extra pixel
    of an odd total goes at the bottom/right), ``"VALID"``, one int, or per-axis ints or pairs.

    Raises:
      ValueError: for another string (``"CIRCULAR"``, ``"REFLECT"``...) or a malformed sequence.
    """
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"padding={padding!r} is not zero padding; use 'SAME', 'VALID' or explicit pairs "
                "(other modes go through nn.Conv)."
            )
        pads = lax.padtype_to_pads(in_hw, kernel_hw, strides, padding.upper())
        return tuple((int(lo), int(hi)) for lo, hi in pads)  # type: ignore[return-value]
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    items = tuple(padding)
    if len(items) != 2:
        raise ValueError(f"padding={padding!r} needs one entry per spatial axis (2).")
    pairs = tuple((p, p) if isinstance(p, int) else tuple(p) for p in items)
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"padding={padding!r}: each entry must be an int or a (low, high) pair.")
    return tuple((int(lo), int(hi)) for lo, hi in pairs)  # type: ignore[return-value]


def _accumulation_dtype(dtype: jnp.dtype) -> jnp.dtype:
    # Sum the k*k products in at least float32, as convolution kernels accumulate bf16 inputs.
    return jnp.promote_types(dtype, jnp.float32)


def _check_depthwise(x: jax.Array, kernel: jax.Array) -> None:
    if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != 1 or kernel.shape[3] != x.shape[3]:
        raise ValueError(
            f"depthwise convolution needs NHWC input and a [kh, kw, 1, C] kernel with C = the "
            f"input channels; got input {x.shape} and kernel {kernel.shape}."
        )


def _strided_tap(xp: jax.Array, i: int, j: int, out_hw: tuple[int, int], strides) -> jax.Array:
    """The ``[N, H_out, W_out, C]`` pixels of ``xp`` that kernel tap ``(i, j)`` multiplies."""
    n, _, _, c = xp.shape
    (ho, wo), (sh, sw) = out_hw, strides
    return lax.slice(
        xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1)
    )


def _shift_sum(xp: jax.Array, taps: jax.Array, out_hw: tuple[int, int], strides) -> jax.Array:
    """``sum_ij tap_ij(xp) * taps[i, j]``: one fused elementwise loop in XLA."""
    y = None
    for i in range(taps.shape[0]):
        for j in range(taps.shape[1]):
            term = _strided_tap(xp, i, j, out_hw, strides) * taps[i, j]
            y = term if y is None else y + term
    return y


def _pad_hw(x: jax.Array, rows: tuple[int, ...], cols: tuple[int, ...]) -> jax.Array:
    return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), rows, cols, (0, 0, 0)))


def depthwise_shift(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: tuple[int, int],
    padding: Pads,
    grad_chunk: int | None = None,
) -> jax.Array:
    """Depthwise convolution as k*k shifted multiply-adds, with a hand-written backward pass.

    ``y[n, h, w, c] = sum_ij xpad[n, s_h*h + i, s_w*w + j, c] * kernel[i, j, 0, c]``: each term is
    a strided slice of the zero-padded input times one row of the kernel, and XLA fuses the sum
    into one loop. The backward pass is written out (a custom VJP) so that only the input is
    kept for it: differentiating the sum would keep all k*k slices, k*k copies of the feature
    map, and XLA then materialises each one in the forward pass. The input gradient is the same
    kind of sum over the output gradient (dilated by the stride, kernel flipped) and the kernel
    gradient one per-channel reduction per tap.

    Products are summed in at least float32 (bf16 inputs give bf16 outputs rounded once).

    Args:
      x: ``[N, H, W, C]``.
      kernel: ``[kh, kw, 1, C]`` (``nn.Conv``'s depthwise layout).
      strides: ``(s_h, s_w)``.
      padding: ``((top, bottom), (left, right))``, non-negative.
      grad_chunk: sum the kernel gradient over chunks of this many images (a ``lax.scan``),
        so each chunk's slices stay in cache; on a 2-core CPU one image per chunk made
        EfficientNet-B0's train step about 15% faster than the whole batch at once. ``None``:
        the whole batch in one reduction, for accelerators, where a sequential loop over the
        batch would idle the device. A chunk that does not divide the batch is rounded down to
        one that does.

    Returns:
      ``[N, H_out, W_out, C]`` in the promoted dtype of ``x`` and ``kernel``.

    Raises:
      ValueError: for mismatched shapes, negative padding or an empty output.
    """
    _check_depthwise(x, kernel)
    if any(p < 0 for pair in padding for p in pair):
        raise ValueError(f"depthwise_shift needs non-negative padding, got {padding}.")
    kh, kw = kernel.shape[:2]
    (pt, pb), (pl, pr) = padding
    _, h, w, _ = x.shape
    if h + pt + pb < kh or w + pl + pr < kw:
        raise ValueError(
            f"depthwise convolution of a {h}x{w} input with a {kh}x{kw} kernel and padding "
            f"{padding} has no output pixels."
        )
    if grad_chunk is not None and grad_chunk < 1:
        raise ValueError(f"grad_chunk={grad_chunk} must be a positive number of images or None.")
    out_dtype = jnp.result_type(x, kernel)
    chunk = _divisor_at_most(x.shape[0], grad_chunk or x.shape[0])
    return _depthwise_shift(
        x.astype(out_dtype), kernel.astype(out_dtype), tuple(strides), tuple(padding), chunk
    )


def _divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _out_hw(x_shape, kernel_shape, strides, padding) -> tuple[int, int]:
    (pt, pb), (pl, pr) = padding
    return (
        (x_shape[1] + pt + pb - kernel_shape[0]) // strides[0] + 1,
        (x_shape[2] + pl + pr - kernel_shape[1]) // strides[1] + 1,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise_shift(x, kernel, strides, padding, grad_chunk):
    acc = _accumulation_dtype(x.dtype)
    xp = _pad_hw(x.astype(acc), (*padding[0], 0), (*padding[1], 0))
    out_hw = _out_hw(x.shape, kernel.shape, strides, padding)
    return _shift_sum(xp, kernel[:, :, 0].astype(acc), out_hw, strides).astype(x.dtype)


def _depthwise_shift_fwd(x, kernel, strides, padding, grad_chunk):
    return _depthwise_shift(x, kernel, strides, padding, grad_chunk), (x, kernel)


def _depthwise_shift_bwd(strides, padding, grad_chunk, residuals, dy):
    x, kernel = residuals
    acc = _accumulation_dtype(x.dtype)
    kh, kw = kernel.shape[:2]
    (pt, pb), (pl, pr) = padding
    (sh, sw), (ho, wo) = strides, dy.shape[1:3]
    hp, wp = x.shape[1] + pt + pb, x.shape[2] + pl + pr
    dy = dy.astype(acc)
    # Input gradient: padded input pixel m collects dy[h] * k[m - s*h]. Spread dy onto the
    # padded grid (stride - 1 zeros between pixels), pad k - 1 zeros in front, and it is a
    # stride-1 correlation with the flipped kernel, of which only the unpadded rows are needed.
    dy_grid = _pad_hw(
        dy, (kh - 1, hp - sh * (ho - 1) - 1, sh - 1), (kw - 1, wp - sw * (wo - 1) - 1, sw - 1)
    )
    flipped = kernel[::-1, ::-1, 0].astype(acc)
    dx = _shift_sum(dy_grid[:, pt:, pl:], flipped, x.shape[1:3], (1, 1))
    # Kernel gradient: per tap, the sum over batch and pixels of input times output gradient.
    # The barrier keeps XLA from merging these slices with the forward pass's identical ones:
    # shared, they would be materialised in the forward pass as k*k feature-map copies.
    xp = _pad_hw(lax.optimization_barrier(x).astype(acc), (pt, pb, 0), (pl, pr, 0))

    def tap_sums(xs: jax.Array, ds: jax.Array) -> jax.Array:
        return jnp.stack(
            [
                jnp.sum(_strided_tap(xs, i, j, (ho, wo), strides) * ds, axis=(0, 1, 2))
                for i in range(kh)
                for j in range(kw)
            ]
        )

    n = x.shape[0]
    if grad_chunk >= n:
        dk = tap_sums(xp, dy)
    else:

        def add_chunk(total: jax.Array, chunk: tuple[jax.Array, jax.Array]):
            return total + tap_sums(*chunk), None

        chunks = (
            xp.reshape(n // grad_chunk, grad_chunk, *xp.shape[1:]),
            dy.reshape(n // grad_chunk, grad_chunk, *dy.shape[1:]),
        )
        dk, _ = lax.scan(add_chunk, jnp.zeros((kh * kw, x.shape[3]), acc), chunks)
    return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


_depthwise_shift.defvjp(_depthwise_shift_fwd, _depthwise_shift_bwd)


def pointwise_dot(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: tuple[int, int],
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """An unpadded 1x1 convolution as a strided slice and a matrix product over channels.

    Args:
      x: ``[N, H, W, C_in]``.
      kernel: ``[1, 1, C_in, C_out]``.
      strides: ``(s_h, s_w)``; the output keeps every ``s``-th pixel, as the convolution does.
      precision: passed to ``lax.dot_general``.
    """
    if x.ndim != 4 or kernel.shape[:2] != (1, 1) or kernel.shape[2] != x.shape[3]:
        raise ValueError(
            f"pointwise_dot needs NHWC input and a [1, 1, C_in, C_out] kernel matching it; got "
            f"input {x.shape} and kernel {kernel.shape}."
        )
    if strides != (1, 1):
        x = x[:, :: strides[0], :: strides[1], :]
    n, h, w, c = x.shape
    # A 2-D [N*H*W, C] operand (a free reshape of NHWC): the weight gradient is then one
    # transposed-operand matrix product, which XLA:CPU runs without copying either operand. With
    # the 4-D operand it contracts three axes at once and XLA first transposes the output
    # gradient, a copy as large as the feature map.
    y = lax.dot_general(
        x.reshape(n * h * w, c), kernel[0, 0], (((1,), (0,)), ((), ())), precision=precision
    )
    return y.reshape(n, h, w, kernel.shape[3])


def _conv(x, kernel, strides, padding, precision):
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=padding,
        dimension_numbers=_DIMENSION_NUMBERS,
        precision=precision,
    )


def conv_tap_filter_grad(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: tuple[int, int],
    padding: Pads,
    precision: lax.PrecisionLike = None,
    patch_chunk: int | None = PATCH_CHUNK,
) -> jax.Array:
    """A dense convolution whose kernel gradient is written as matrix products.

    Forward and input gradient are XLA's. The kernel gradient of tap ``(i, j)`` is
    ``X_ij^T @ dY`` with ``X_ij`` the ``[N*H_out*W_out, C_in]`` strided slice of the padded input
    that the tap sees: a transposed-operand matrix product XLA:CPU runs directly, in place of
    its convolution with a feature-map-sized window and the transposes it needs. From
    :data:`PATCHES_MIN_OUT_PIXELS` output pixels per image the k*k slices of ``patch_chunk``
    images at a time are concatenated into im2col patches and the whole kernel gradient is one
    product per chunk, accumulated by a ``lax.scan``.

    Args:
      x: ``[N, H, W, C_in]``.
      kernel: ``[kh, kw, C_in, C_out]``.
      strides: ``(s_h, s_w)``.
      padding: ``((top, bottom), (left, right))``, non-negative.
      precision: passed to the convolution and the matrix products.
      patch_chunk: images per im2col chunk on large maps; ``None``: per tap on every map.
    """
    if any(p < 0 for pair in padding for p in pair):
        raise ValueError(f"conv_tap_filter_grad needs non-negative padding, got {padding}.")
    if patch_chunk is not None and patch_chunk < 1:
        raise ValueError(f"patch_chunk={patch_chunk} must be a positive number of images or None.")
    return _conv_taps(x, kernel, tuple(strides), tuple(padding), precision, patch_chunk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_taps(x, kernel, strides, padding, precision, patch_chunk):
    return _conv(x, kernel, strides, padding, precision)


def _conv_tap_fwd(x, kernel, strides, padding, precision, patch_chunk):
    return _conv_taps(x, kernel, strides, padding, precision, patch_chunk), (x, kernel)


def _conv_tap_bwd(strides, padding, precision, patch_chunk, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: _conv(x_, kernel, strides, padding, precision), x)
    (dx,) = input_vjp(dy)
    xp = _pad_hw(x, (*padding[0], 0), (*padding[1], 0))
    n, ho, wo, _ = dy.shape
    if patch_chunk is None or ho * wo < PATCHES_MIN_OUT_PIXELS:
        dk = _per_tap_kernel_grad(xp, dy, kernel.shape, strides, precision)
    else:
        dk = _patch_kernel_grad(xp, dy, kernel.shape, strides, precision, patch_chunk)
    return dx, dk.astype(kernel.dtype)


def _per_tap_kernel_grad(xp, dy, kernel_shape, strides, precision) -> jax.Array:
    """``X_ij^T @ dY`` for each tap ``(i, j)`` of the kernel, over the whole batch."""
    kh, kw, c_in, c_out = kernel_shape
    n, ho, wo, _ = dy.shape
    dy2 = dy.reshape(n * ho * wo, c_out)
    taps = [
        lax.dot_general(
            _strided_tap(xp, i, j, (ho, wo), strides).reshape(n * ho * wo, c_in),
            dy2,
            (((0,), (0,)), ((), ())),
            precision=precision,
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(taps).reshape(kernel_shape)


def _patch_kernel_grad(xp, dy, kernel_shape, strides, precision, patch_chunk) -> jax.Array:
    """``P^T @ dY`` with ``P`` the ``[pixels, kh*kw*C_in]`` im2col patches, summed over chunks
    of ``patch_chunk`` images (a ``lax.scan``) so each chunk's patches stay in cache; a chunk
    that does not divide the batch is rounded down to one that does."""
    kh, kw, c_in, c_out = kernel_shape
    n, ho, wo, _ = dy.shape
    chunk = _divisor_at_most(n, patch_chunk)

    def add_chunk(total: jax.Array, xs: tuple[jax.Array, jax.Array]):
        x_c, dy_c = xs
        patches = jnp.concatenate(
            [_strided_tap(x_c, i, j, (ho, wo), strides) for i in range(kh) for j in range(kw)],
            axis=-1,
        )
        grad = lax.dot_general(
            patches.reshape(chunk * ho * wo, kh * kw * c_in),
            dy_c.reshape(chunk * ho * wo, c_out),
            (((0,), (0,)), ((), ())),
            precision=precision,
        )
        return total + grad.astype(total.dtype), None

    xs = (
        xp.reshape(n // chunk, chunk, *xp.shape[1:]),
        dy.reshape(n // chunk, chunk, *dy.shape[1:]),
    )
    acc = _accumulation_dtype(dy.dtype)
    total, _ = lax.scan(add_chunk, jnp.zeros((kh * kw * c_in, c_out), acc), xs)
    return total.reshape(kernel_shape)


_conv_taps.defvjp(_conv_tap_fwd, _conv_tap_bwd)


def grouped_conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: tuple[int, int],
    padding: Pads,
    feature_group_count: int,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """XLA's grouped convolution (run batch-local by :class:`Conv`, see :func:`batch_local`)."""
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=padding,
        dimension_numbers=_DIMENSION_NUMBERS,
        feature_group_count=feature_group_count,
        precision=precision,
    )


def batch_local(conv: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable:
    """``conv(x, kernel)`` run by each device on its own shard of the batch.

    Under ``jit`` with the batch split over a mesh, XLA's SPMD partitioner keeps a plain
    convolution batch-sharded, but not two kinds of operation this module uses:

    * a grouped convolution with more than one input channel per group (ResNeXt, RegNet): the
      partitioner all-gathers the global batch onto every device, convolves all of it there and
      slices the local part back out (openxla/xla#47945);
    * the ``lax.scan`` over chunks of images that the kernel gradients of :func:`depthwise_shift`
      and :func:`conv_tap_filter_grad` run: a scan over the sharded batch axis is gathered too.

    Either way every device recomputes those layers for the whole global batch, forward and
    backward. ``shard_map`` over the mesh's :data:`BATCH_AXIS` says what data parallelism
    means: each device convolves its own examples with the replicated kernel, and the kernel
    gradient is summed over devices by ``shard_map``'s transpose. Without such a mesh in context
    (``jax.set_mesh``), or when the batch does not split evenly, ``conv`` runs as it is.
    """

    def run(x: jax.Array, kernel: jax.Array) -> jax.Array:
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty or BATCH_AXIS not in mesh.axis_names:
            return conv(x, kernel)
        devices = mesh.shape[BATCH_AXIS]
        if devices == 1 or x.shape[0] % devices:
            return conv(x, kernel)
        spec = jax.sharding.PartitionSpec
        return jax.shard_map(
            conv,
            in_specs=(spec(BATCH_AXIS), spec()),
            out_specs=spec(BATCH_AXIS),
            axis_names={BATCH_AXIS},
            # The kernel gradients' scans start from a zero carry that is the same on every
            # device; the check would ask for it to be marked per-device. Gradients of the
            # replicated kernel are still summed over devices (tests/models/test_depthwise.py).
            check_vma=False,
        )(x, kernel)

    return run


class Conv(nn.Conv):
    """``nn.Conv`` that sends depthwise, 1x1 and other dense convolutions to chosen
    implementations.

    A drop-in for the ``conv`` field of every family: the same constructor (``features``,
    ``kernel_size``, ``strides``, ``padding``, ``feature_group_count``, ``use_bias``, ``dtype``,
    ``param_dtype``, ``kernel_init``...) and the same parameters. A call is *depthwise* when
    ``feature_group_count`` equals both the input channels and ``features``, *pointwise* when the
    kernel is 1x1 with one group and no padding, and *dense* for any other one-group kernel with
    at least :data:`TAPS_MIN_IN_FEATURES` input channels (or, with ``dense_patch_chunk`` set,
    :data:`PATCHES_MIN_OUT_PIXELS` output pixels) and at least ``dense_min_out_pixels`` output
    pixels, and *grouped* for more than one group with more than one input channel per group.
    Each needs 2-D NHWC input, zero padding, no dilation and no mask; every other call (grouped
    convolutions, circular padding...) and every case left at ``"xla"`` is ``nn.Conv.__call__``.

    Attributes:
      depthwise: one of :data:`DEPTHWISE_IMPLS`.
      depthwise_grad_chunk: images per kernel-gradient chunk of :func:`depthwise_shift`
        (``None``: the whole batch at once).
      pointwise: one of :data:`POINTWISE_IMPLS`.
      dense: one of :data:`DENSE_IMPLS`.
      dense_patch_chunk: images per im2col chunk of :func:`conv_tap_filter_grad`'s kernel
        gradient on large maps (``None``: per tap on every map).
      dense_min_out_pixels: dense convolutions with fewer output pixels per image stay XLA's.
      grouped: one of :data:`GROUPED_IMPLS`.
    """

    depthwise: str = "shift"
    depthwise_grad_chunk: int | None = None
    pointwise: str = "xla"
    dense: str = "xla"
    dense_patch_chunk: int | None = PATCH_CHUNK
    dense_min_out_pixels: int = 0
    grouped: str = "xla"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if self.depthwise not in DEPTHWISE_IMPLS:
            raise ValueError(f"depthwise={self.depthwise!r}; choose one of {DEPTHWISE_IMPLS}.")
        if self.pointwise not in POINTWISE_IMPLS:
            raise ValueError(f"pointwise={self.pointwise!r}; choose one of {POINTWISE_IMPLS}.")
        if self.dense not in DENSE_IMPLS:
            raise ValueError(f"dense={self.dense!r}; choose one of {DENSE_IMPLS}.")
        if self.grouped not in GROUPED_IMPLS:
            raise ValueError(f"grouped={self.grouped!r}; choose one of {GROUPED_IMPLS}.")
        route = self._route(inputs)
        if route is None:
            return super().__call__(inputs)
        kind, strides, pads = route
        in_features = inputs.shape[-1]
        kernel_hw = self._kernel_hw()
        in_per_group = {"depthwise": 1, "grouped": in_features // self.feature_group_count}.get(
            kind, in_features
        )
        kernel = self.param(
            "kernel", self.kernel_init, kernel_hw + (in_per_group, self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        if kind == "depthwise":
            conv = functools.partial(
                depthwise_shift,
                strides=strides,
                padding=pads,
                grad_chunk=self.depthwise_grad_chunk,
            )
        elif kind == "grouped":
            conv = functools.partial(
                grouped_conv,
                strides=strides,
                padding=pads,
                feature_group_count=self.feature_group_count,
                precision=self.precision,
            )
        elif kind == "dense":
            conv = functools.partial(
                conv_tap_filter_grad,
                strides=strides,
                padding=pads,
                precision=self.precision,
                patch_chunk=self.dense_patch_chunk,
            )
        else:
            conv = functools.partial(pointwise_dot, strides=strides, precision=self.precision)
        y = batch_local(conv)(inputs, kernel)
        if bias is not None:
            y = y + bias
        return y

    def _kernel_hw(self) -> tuple[int, ...]:
        if isinstance(self.kernel_size, int):
            return (self.kernel_size,)
        return tuple(self.kernel_size)

    def _pair(self, value: None | int | Sequence[int]) -> tuple[int, ...]:
        if value is None:
            value = 1
        if isinstance(value, int):
            return (value,) * len(self._kernel_hw())
        return tuple(value)

    def _route(self, inputs: jax.Array) -> tuple[str, tuple[int, int], Pads] | None:
        """``(kind, strides, pads)`` when a faster implementation applies, else ``None``."""
        kernel_hw = self._kernel_hw()
        if (
            inputs.ndim != 4
            or len(kernel_hw) != 2
            or self.mask is not None
            or self._pair(self.input_dilation) != (1, 1)
            or self._pair(self.kernel_dilation) != (1, 1)
            or (isinstance(self.padding, str) and self.padding.upper() not in ("SAME", "VALID"))
        ):
            return None
        strides = self._pair(self.strides)
        pads = explicit_padding(
            self.padding, in_hw=inputs.shape[1:3], kernel_hw=kernel_hw, strides=strides
        )
        in_features = inputs.shape[-1]
        groups = self.feature_group_count
        non_negative = all(p >= 0 for pair in pads for p in pair)
        if (
            self.depthwise == "shift"
            and groups == in_features == self.features
            and groups > 1
            and non_negative
        ):
            return "depthwise", strides, pads
        if self.grouped == "local" and 1 < groups < in_features and in_features % groups == 0:
            return "grouped", strides, pads
        unpadded = pads == ((0, 0), (0, 0))
        if self.pointwise == "dot" and kernel_hw == (1, 1) and groups == 1 and unpadded:
            return "pointwise", strides, pads
        out_hw = _out_hw(inputs.shape, kernel_hw, strides, pads)
        if (
            self.dense == "taps"
            and groups == 1
            and non_negative
            and out_hw[0] * out_hw[1] >= self.dense_min_out_pixels
            and (
                in_features >= TAPS_MIN_IN_FEATURES
                or (
                    self.dense_patch_chunk is not None
                    and out_hw[0] * out_hw[1] >= PATCHES_MIN_OUT_PIXELS
                )
            )
        ):
            return "dense", strides, pads
        return None


# Named choices for a model's ``conv`` field. "cpu" is what measured fastest on XLA:CPU for
# ResNet-50 and EfficientNet-B0 at 224 px (benchmarks/RESULTS.md); "shift" changes only the
# depthwise convolutions, the candidate for GPUs, where cuDNN runs dense convolutions well; "xla"
# is nn.Conv's behaviour; "auto" is the backend's entry of BACKEND_DEFAULTS, what every model
# uses unless told otherwise.
PRESETS: dict[str, dict[str, object]] = {
    "xla": dict(depthwise="xla", pointwise="xla", dense="xla"),
    "shift": dict(depthwise="shift", pointwise="xla", dense="xla"),
    "cpu": dict(
        depthwise="shift",
        depthwise_grad_chunk=1,
        pointwise="dot",
        dense="taps",
        dense_patch_chunk=PATCH_CHUNK,
    ),
}

# The default per backend (``jax.default_backend()`` when the model is traced). XLA:CPU: the
# "cpu" preset's depthwise and 1x1 convolutions, but XLA's own k x k convolutions, kernel
# gradients included: at batch 8 and 224 px (the benchmark's CPU command) XLA's kernel gradient
# measured faster than the im2col patches on the maps where those had been chosen at batch 16
# (ResNet-50's 3x3 64 @56: 33 ms against 68 on one core, 112 against 222 on two; the 7x7 stem:
# 50 against 94), and no slower elsewhere; ResNet-50's whole train step, interleaved on two
# threads, 11.7 -> 10.0 s at a load of 15 (RESULTS.md, "CPU train step at 224 px, batch 8").
# Elsewhere XLA's own convolutions: nothing faster has been measured on a GPU or TPU yet. Every
# backend keeps grouped convolutions batch-local under a data-parallel mesh (openxla/xla#47945).
BACKEND_DEFAULTS: dict[str, dict[str, object]] = {
    "cpu": dict(
        depthwise="shift", depthwise_grad_chunk=1, pointwise="dot", dense="xla", grouped="local"
    ),
}
OTHER_BACKENDS_DEFAULT: dict[str, object] = dict(PRESETS["xla"], grouped="local")
AUTO = "auto"


def backend_default(backend: str | None = None) -> dict[str, object]:
    """The :class:`Conv` fields a model uses on ``backend`` (default: JAX's default backend)."""
    backend = jax.default_backend() if backend is None else backend
    return dict(BACKEND_DEFAULTS.get(backend, OTHER_BACKENDS_DEFAULT))


def conv_preset(name: str) -> functools.partial:
    """``Conv`` bound to the implementations of preset ``name`` (a key of :data:`PRESETS`, or
    ``"auto"``: :func:`backend_default` of the backend in use now).

    Raises:
      ValueError: for an unknown name.
    """
    if name == AUTO:
        return functools.partial(Conv, **backend_default())
    if name not in PRESETS:
        raise ValueError(
            f"Unknown convolution preset {name!r}; choose one of {sorted([*PRESETS, AUTO])}."
        )
    return functools.partial(Conv, **PRESETS[name])


def describe(name: str) -> str:
    """What preset ``name`` runs here, e.g. ``"auto (cpu: depthwise=shift, ...)"``."""
    if name == AUTO:
        fields, label = backend_default(), f"auto ({jax.default_backend()}"
    else:
        fields, label = PRESETS[name], f"{name} ("
    return label + ": " * (name == AUTO) + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"
