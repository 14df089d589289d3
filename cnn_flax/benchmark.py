"""Benchmark a model's train step or inference on the local accelerator, optionally against
torchvision.

    python -m cnn_flax.benchmark --model=resnet50 --batch-size=128 --dtype=bfloat16 \
        --mode=train --compare=torch
    python -m cnn_flax.benchmark --all --batch-size=8 --resolution=64 --mode=infer

Reports compile time, step time (median timing window, one device sync per window), images per
second, forward FLOPs per image (XLA's count), peak memory, and MFU against the device's dense
peak (achieved GFLOP/s on CPUs, which have no entry in the peak table). ``--compare=torch`` times
torchvision's model in the same process and prints ``ratio: X`` = cnn_flax img/s divided by the
fastest torchvision variant. The persistent compilation cache is on by default, so a second run of
the same configuration compiles in seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cnn_flax.perf import compile_cache

COMPARE = ("none", "torch")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cnn_flax.benchmark", description=__doc__.split("\n\n")[0]
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="registered model name, or several separated by commas")
    which.add_argument("--all", action="store_true", help="every registered model, as a table")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--dtype",
        choices=("auto", "bfloat16", "float32"),
        default="auto",
        help="compute dtype; auto = bfloat16 on accelerators, float32 on CPU",
    )
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--resolution", type=int, default=None, help="default: the model's own")
    p.add_argument("--steps", type=int, default=20, help="timed steps (multiple of --windows)")
    p.add_argument("--windows", type=int, default=5, help="timing windows; median is reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
    p.add_argument(
        "--remat",
        choices=("none", "dots", "full", "blocks"),
        default="none",
        help="rematerialisation: dots/full = jax.checkpoint policy on the whole step; blocks = "
        "nn.remat per residual block (ResNet family)",
    )
    p.add_argument(
        "--step",
        choices=("auto", "trainer", "minimal"),
        default="auto",
        help="train step: the trainer's (cnn_flax.steps) or a minimal one; auto = trainer's "
        "where it can be built and --remat is not dots/full",
    )
    p.add_argument("--compare", choices=COMPARE, default="none")
    p.add_argument(
        "--torch-variants",
        default="eager,channels_last,compile",
        help="comma-separated subset of eager,channels_last,compile",
    )
    p.add_argument(
        "--compilation-cache-dir",
        default=None,
        help="persistent XLA cache; default $CNN_FLAX_CACHE_DIR or ~/.cache/cnn_flax/jax; "
        "'' turns it off",
    )
    p.add_argument("--markdown", default=None, help="also append the results table to this file")
    return p


def _fmt_flops(x: float) -> str:
    return f"{x / 1e9:.3f}"


def _utilisation(result) -> str:
    if result.mfu is not None:
        return f"{100 * result.mfu:.1f}% MFU"
    return f"{result.achieved_flops_per_s / 1e9:.1f} GFLOP/s"


def _report(result, torch_results, torch_device: str | None) -> list[str]:
    s = result.settings
    lines = [
        f"model: {s.model}  mode: {s.mode}  dtype: {s.dtype}  batch: {s.batch_size}  "
        f"resolution: {result.resolution}  remat: {s.remat}  device: {result.device}",
        f"train step: {result.step_impl}" if s.mode == "train" else "infer: model.apply eval",
        f"compile time: {result.compile_s:.2f} s",
        f"step time: {result.step_s * 1e3:.2f} ms (median of {s.windows} windows x "
        f"{s.steps // s.windows} steps, after {s.warmup} warm-up steps)",
        f"throughput: {result.images_per_s:.1f} img/s",
        f"model FLOPs/image: {_fmt_flops(result.forward_flops_per_image)} GFLOPs forward "
        f"(XLA count); {_fmt_flops(result.step_flops)} GFLOPs per step"
        + (" (3x forward)" if s.mode == "train" else ""),
    ]
    if result.mfu is not None:
        lines.append(
            f"MFU: {100 * result.mfu:.2f}% ({result.achieved_flops_per_s / 1e12:.1f} "
            f"TFLOP/s achieved)"
        )
    else:
        lines.append(
            f"achieved: {result.achieved_flops_per_s / 1e9:.1f} GFLOP/s (no peak known for "
            f"{result.device}, so no MFU)"
        )
    lines.append(f"peak memory: {result.peak_memory.describe()}")
    lines.append(f"XLA step memory: {result.xla_memory.describe()}")
    if torch_results is not None:
        from cnn_flax.perf import torch_bench

        lines.append(f"torchvision ({torch_device}):")
        lines += [f"  {r.variant}: {r.describe()}" for r in torch_results]
        best = torch_bench.fastest(torch_results)
        if best is None:
            lines.append("ratio: n/a (no torchvision variant ran)")
        else:
            lines.append(f"ratio: {result.images_per_s / best.images_per_s:.3f}")
    return lines


TABLE_HEADER = (
    "| model | mode | dtype | batch | res | compile s | step ms | img/s | fwd GFLOPs/img "
    "| MFU or GFLOP/s | peak memory | torch best img/s | ratio |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(result, torch_results) -> str:
    """One markdown table row for a finished run."""
    s = result.settings
    best_txt, ratio = "-", "-"
    if torch_results is not None:
        from cnn_flax.perf import torch_bench

        best = torch_bench.fastest(torch_results)
        if best is None:
            best_txt, ratio = "n/a", "n/a"
        else:
            best_txt = f"{best.images_per_s:.1f} ({best.variant})"
            ratio = f"{result.images_per_s / best.images_per_s:.3f}"
    mem = result.peak_memory
    mem_txt = "n/a" if mem.bytes is None else f"{mem.bytes / 2**30:.2f} GiB"
    if mem.source.startswith("no device stats"):
        mem_txt += " RSS"
    return (
        f"| {s.model} | {s.mode} | {s.dtype} | {s.batch_size} | {result.resolution} "
        f"| {result.compile_s:.1f} | {result.step_s * 1e3:.1f} | {result.images_per_s:.1f} "
        f"| {_fmt_flops(result.forward_flops_per_image)} | {_utilisation(result)} | {mem_txt} "
        f"| {best_txt} | {ratio} |"
    )


def error_row(name: str, args: argparse.Namespace, err: BaseException) -> str:
    msg = f"{type(err).__name__}: {err}".splitlines()[0][:120].replace("|", "/")
    return f"| {name} | {args.mode} | {args.dtype} | {args.batch_size} | - | error: {msg} |"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.compare == "torch":
        # JAX takes 75% of GPU memory up front by default, which would leave torch too little.
        # Read when the backend starts, so this must come before the first device use.
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
    try:
        cache = compile_cache.enable_compilation_cache(args.compilation_cache_dir)
        import jax

        from cnn_flax.models import list_models
        from cnn_flax.perf import jax_bench

        names = list_models() if args.all else [n for n in args.model.split(",") if n]
        variants = tuple(v for v in args.torch_variants.split(",") if v)
        dtype = args.dtype
        if dtype == "auto":
            dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
        print(
            f"jax {jax.__version__} on {jax.devices()[0].device_kind}; compilation cache: "
            f"{cache or 'off'}",
            flush=True,
        )
        rows = []
        for name in names:
            settings = jax_bench.Settings(
                model=name,
                batch_size=args.batch_size,
                dtype=dtype,
                mode=args.mode,
                resolution=args.resolution,
                steps=args.steps,
                windows=args.windows,
                warmup=args.warmup,
                remat=args.remat,
                step=args.step,
            )
            try:
                result = jax_bench.run(settings)
                torch_results, torch_device = None, None
                if args.compare == "torch":
                    torch_results, torch_device = _compare_torch(result, variants)
            except (ValueError, TypeError, RuntimeError) as err:
                if len(names) == 1:
                    raise
                print(f"{name}: error: {err}", file=sys.stderr, flush=True)
                rows.append(error_row(name, args, err))
                continue
            print("\n".join(_report(result, torch_results, torch_device)) + "\n", flush=True)
            rows.append(table_row(result, torch_results))
        table = TABLE_HEADER + "\n" + "\n".join(rows)
        if len(names) > 1:
            print(table)
        if args.markdown:
            with open(args.markdown, "a") as f:
                f.write(table + "\n\n")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _compare_torch(result, variants: tuple[str, ...]):
    from cnn_flax.models import model_info
    from cnn_flax.perf import torch_bench

    s = result.settings
    tv_name = model_info(s.model).torchvision
    if tv_name is None:
        note = f"{s.model} has no torchvision counterpart"
        return [torch_bench.TorchResult(v, None, note=note) for v in variants], "-"
    results = torch_bench.run_torchvision(
        tv_name,
        mode=s.mode,
        dtype=s.dtype,
        batch_size=s.batch_size,
        resolution=result.resolution,
        steps=s.steps,
        windows=s.windows,
        warmup=s.warmup,
        variants=variants,
    )
    try:
        device = torch_bench.torch_device_name()
    except ImportError:
        device = "torch not installed"
    return results, device


if __name__ == "__main__":
    sys.exit(main())
