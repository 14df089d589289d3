"""Each direction of single convolution layers, timed alone: XLA's, cnn_flax's, PyTorch's.

    python -m cnn_flax.perf.conv_ops [--batch-size=16] [--repeats=7] [--layers=NAME,...]

A train step runs every convolution three times: forward, input gradient and kernel gradient.
This times each direction of representative ResNet-50 and EfficientNet-B0 layers at 224 px
(``LAYERS``) as its own compiled program, for ``lax.conv_general_dilated`` ("xla"), for the
implementation ``cnn_flax.models.depthwise``'s "cpu" preset picks for that layer ("ours"), and
for ``torch.ops.aten.convolution_backward`` on channels_last tensors (PyTorch's oneDNN/cuDNN
kernels), with the median of ``--repeats`` runs. On a machine shared with other jobs run the
whole table twice: the ratios within one row hold better than the absolute times.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.models import depthwise


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution: input ``size`` x ``size`` x ``c_in``, square kernel, symmetric pad."""

    name: str
    size: int
    c_in: int
    c_out: int
    kernel: int
    strides: int = 1
    groups: int = 1

    @property
    def padding(self) -> depthwise.Pads:
        half = (self.kernel - 1) // 2
        return ((half, half), (half, half))


LAYERS = (
    Layer("resnet50 stem 7x7/2", 224, 3, 64, 7, 2),
    Layer("resnet50 1x1 256->64 @56", 56, 256, 64, 1),
    Layer("resnet50 1x1/2 256->512 @56", 56, 256, 512, 1, 2),
    Layer("resnet50 3x3 64 @56", 56, 64, 64, 3),
    Layer("resnet50 3x3 128 @28", 28, 128, 128, 3),
    Layer("effnet dw 3x3 32 @112", 112, 32, 32, 3, 1, 32),
    Layer("effnet dw 3x3/2 96 @112", 112, 96, 96, 3, 2, 96),
    Layer("effnet dw 5x5/2 144 @56", 56, 144, 144, 5, 2, 144),
    Layer("effnet dw 5x5 672 @14", 14, 672, 672, 5, 1, 672),
)
DIRECTIONS = ("forward", "input grad", "kernel grad")


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _xla_conv(layer: Layer) -> Callable:
    s = (layer.strides, layer.strides)
    return lambda x, k: jax.lax.conv_general_dilated(
        x,
        k,
        s,
        layer.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=layer.groups,
    )


def _our_conv(layer: Layer) -> Callable:
    """The implementation ``depthwise.Conv`` with the "cpu" preset uses for ``layer``."""
    preset = depthwise.PRESETS["cpu"]
    s = (layer.strides, layer.strides)
    if layer.groups > 1:
        return lambda x, k: depthwise.depthwise_shift(
            x, k, strides=s, padding=layer.padding, grad_chunk=preset["depthwise_grad_chunk"]
        )
    if layer.kernel == 1:
        return lambda x, k: depthwise.pointwise_dot(x, k, strides=s)
    return lambda x, k: depthwise.conv_tap_filter_grad(x, k, strides=s, padding=layer.padding)


def _jax_times(conv: Callable, layer: Layer, batch: int, repeats: int) -> list[float]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, layer.size, layer.size, layer.c_in), np.float32))
    k_shape = (layer.kernel, layer.kernel, layer.c_in // layer.groups, layer.c_out)
    k = jnp.asarray(0.1 * rng.standard_normal(k_shape, np.float32))
    dy = jnp.ones(jax.eval_shape(conv, x, k).shape, jnp.float32)
    fns = (
        jax.jit(conv),
        jax.jit(lambda x, k, dy: jax.vjp(lambda x_: conv(x_, k), x)[1](dy)[0]),
        jax.jit(lambda x, k, dy: jax.vjp(lambda k_: conv(x, k_), k)[1](dy)[0]),
    )
    args = ((x, k), (x, k, dy), (x, k, dy))
    return [
        _median_ms(lambda f=f, a=a: jax.block_until_ready(f(*a)), repeats)
        for f, a in zip(fns, args)
    ]


def _torch_times(layer: Layer, batch: int, repeats: int) -> list[float] | None:
    try:
        import torch
    except ImportError:
        return None
    cl = torch.channels_last
    x = torch.randn(batch, layer.c_in, layer.size, layer.size).contiguous(memory_format=cl)
    w = 0.1 * torch.randn(layer.c_out, layer.c_in // layer.groups, layer.kernel, layer.kernel)
    w = w.contiguous(memory_format=cl)
    s, p = [layer.strides] * 2, [(layer.kernel - 1) // 2] * 2
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, w, stride=s, padding=p, groups=layer.groups)
        dy = torch.ones_like(y).contiguous(memory_format=cl)

        def backward(mask):
            return lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, s, p, [1, 1], False, [0, 0], layer.groups, mask
            )

        fns = (
            lambda: torch.nn.functional.conv2d(x, w, stride=s, padding=p, groups=layer.groups),
            backward([True, False, False]),
            backward([False, True, False]),
        )
        return [_median_ms(f, repeats) for f in fns]


def run(layers: Sequence[Layer], *, batch: int, repeats: int) -> list[str]:
    """Markdown table rows (printed as they come): per layer and direction, ms for xla, ours
    and torch."""
    rows = [
        "| layer | direction | xla ms | ours ms | torch channels_last ms | xla / ours |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(rows), flush=True)
    for layer in layers:
        xla = _jax_times(_xla_conv(layer), layer, batch, repeats)
        ours = _jax_times(_our_conv(layer), layer, batch, repeats)
        theirs = _torch_times(layer, batch, repeats)
        for d, direction in enumerate(DIRECTIONS):
            torch_txt = "-" if theirs is None else f"{theirs[d]:.1f}"
            rows.append(
                f"| {layer.name} | {direction} | {xla[d]:.1f} | {ours[d]:.1f} | {torch_txt} "
                f"| {xla[d] / ours[d]:.1f} |"
            )
            print(rows[-1], flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnn_flax.perf.conv_ops", description=__doc__)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument(
        "--layers", default="", help="comma-separated substrings of layer names; default all"
    )
    args = p.parse_args(argv)
    wanted = [w for w in args.layers.split(",") if w]
    layers = [la for la in LAYERS if not wanted or any(w in la.name for w in wanted)]
    if not layers:
        names = ", ".join(la.name for la in LAYERS)
        print(f"error: --layers={args.layers!r} matches none of: {names}", file=sys.stderr)
        return 2
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, batch {args.batch_size}")
    run(layers, batch=args.batch_size, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
