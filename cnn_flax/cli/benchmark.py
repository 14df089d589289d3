"""Benchmark a model's train step or inference on the local accelerator, optionally against
torchvision.

    python -m cnn_flax.benchmark --model=resnet50 --batch-size=128 --dtype=bfloat16 \
        --mode=train --compare=torch
    python -m cnn_flax.benchmark --all --batch-size=8 --resolution=64 --mode=infer
    python -m cnn_flax.benchmark --model=resnet50,efficientnet_b0 --compile-only
    python -m cnn_flax.benchmark --model=resnet50 --data=folder:DIR --batch-size=64

Reports compile time, step time (median timing window, one device sync per window), images per
second, forward FLOPs per image (XLA's count), peak memory, and MFU against the device's dense
peak (achieved GFLOP/s on CPUs, which have no entry in the peak table). ``--compare=torch`` times
torchvision's model in the same process and prints ``ratio: X`` = cnn_flax img/s divided by the
fastest torchvision variant. ``--data`` then trains the same compiled step from image files
through an input pipeline and prints the end-to-end rate and the time spent waiting for data.
``--compile-only`` measures cold and warm (persistent-cache) compile times instead of speed.
``--profile=DIR`` writes a profiler trace of two steps (``python -m cnn_flax.perf.profile DIR``
summarises it). The persistent compilation cache is on by default.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cnn_flax.perf import compile_cache, report

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
        help="train step: the trainer's (cnn_flax.training.steps) or a minimal one; auto = "
        "trainer's where it can be built and --remat is not dots/full",
    )
    p.add_argument(
        "--conv",
        choices=("model", "auto", "xla", "shift", "cpu"),
        default="model",
        help="convolution implementations (cnn_flax.models.depthwise.PRESETS): model = the "
        "model's own default, which is auto; auto = the fastest measured on this backend "
        "(XLA:CPU: cpu's depthwise and 1x1 convolutions, XLA's k x k ones; elsewhere xla); xla = "
        "nn.Conv; shift = depthwise as shifted multiply-adds; cpu = shift + 1x1 as matrix "
        "products + k x k kernel gradients as matrix products",
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
    p.add_argument(
        "--compile-only",
        action="store_true",
        help="measure trace/lower time and cold and warm (persistent cache) compile times of "
        "the step, each model into its own empty cache; no step timing",
    )
    p.add_argument(
        "--data",
        default=None,
        help="also train from this dataset through a real input pipeline (e.g. folder:DIR) "
        "and report end-to-end img/s and the wait for data per step; --mode=train",
    )
    p.add_argument("--data-dir", default=None, help="dataset cache/index directory for --data")
    p.add_argument(
        "--data-loader",
        choices=("cnn_flax", "torch"),
        default="cnn_flax",
        help="cnn_flax: the trainer's tf.data pipeline (needs TensorFlow) with the trainer's "
        "step; torch: torchvision's DataLoader with the minimal step (machines without TF)",
    )
    p.add_argument("--profile", default=None, help="write a profiler trace of 2 steps here")
    p.add_argument("--markdown", default=None, help="also append the results table to this file")
    return p


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

        names = list_models() if args.all else [n for n in args.model.split(",") if n]
        _check_modes(args)
        dtype = args.dtype
        if dtype == "auto":
            dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
        print(
            f"jax {jax.__version__} on {jax.devices()[0].device_kind}; compilation cache: "
            f"{cache or 'off'}",
            flush=True,
        )
        if args.compile_only:
            header, rows = _compile_times(names, args, dtype)
        else:
            header, rows = report.TABLE_HEADER, _speed(names, args, dtype)
        table = header + "\n" + "\n".join(rows)
        if len(names) > 1 or args.compile_only:
            print(table)
        if args.markdown:
            with open(args.markdown, "a") as f:
                f.write(table + "\n\n")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _check_modes(args: argparse.Namespace) -> None:
    """Refuses combinations that cannot work, before any model is built."""
    if args.compile_only:
        extras = [f for f, on in (("--compare", args.compare != "none"), ("--data", args.data),
                                  ("--profile", args.profile)) if on]  # fmt: skip
        if extras:
            raise ValueError(f"--compile-only times no steps; drop {', '.join(extras)}.")
    if args.data:
        from cnn_flax.perf import real_data

        real_data.check(args.data_loader, args.data)


def _settings(name: str, args: argparse.Namespace, dtype: str):
    from cnn_flax.perf import jax_bench, real_data

    step = args.step
    if args.data:
        if args.mode != "train":
            raise ValueError("--data times training; use it with --mode=train.")
        needed = real_data.required_step(args.data_loader)
        if step not in ("auto", needed):
            raise ValueError(
                f"--data-loader={args.data_loader} feeds the {needed} step; drop --step={step}."
            )
        step = needed
    return jax_bench.Settings(
        model=name,
        batch_size=args.batch_size,
        dtype=dtype,
        mode=args.mode,
        resolution=args.resolution,
        steps=args.steps,
        windows=args.windows,
        warmup=args.warmup,
        remat=args.remat,
        step=step,
        conv=args.conv,
    )


def _speed(names: list[str], args: argparse.Namespace, dtype: str) -> list[str]:
    """Times each model (and torchvision, real data, a trace as asked); one table row each."""
    from cnn_flax.perf import jax_bench, real_data

    variants = tuple(v for v in args.torch_variants.split(",") if v)
    rows = []
    for name in names:
        settings = _settings(name, args, dtype)
        try:
            result = jax_bench.run(settings)
            real = None
            if args.data:
                real = real_data.run(
                    result,
                    loader=args.data_loader,
                    dataset=args.data,
                    data_dir=args.data_dir,
                    steps=args.steps,
                    warmup=max(args.warmup, 2),
                )
            if args.profile:
                from cnn_flax.perf import profile

                where = profile.trace_steps(
                    jax_bench.run_steps_fn(result.compiled, result.prepared),
                    f"{args.profile}/{name}" if len(names) > 1 else args.profile,
                )
                print(f"{name}: profile trace of 2 steps in {where}", flush=True)
            torch_results, torch_device = None, None
            if args.compare == "torch":
                torch_results, torch_device = _compare_torch(result, variants)
        except (ValueError, TypeError, RuntimeError) as err:
            if len(names) == 1:
                raise
            print(f"{name}: error: {err}", file=sys.stderr, flush=True)
            rows.append(report.error_row(settings, err))
            continue
        print("\n".join(report.lines(result, torch_results, torch_device, real)) + "\n", flush=True)
        rows.append(report.table_row(result, torch_results, real))
    return rows


def _compile_times(names: list[str], args: argparse.Namespace, dtype: str) -> tuple[str, list[str]]:
    from cnn_flax.perf import compile_times

    rows = []
    for name in names:
        settings = _settings(name, args, dtype)
        try:
            times = compile_times.measure(settings)
        except (ValueError, TypeError, RuntimeError) as err:
            if len(names) == 1:
                raise
            print(f"{name}: error: {err}", file=sys.stderr, flush=True)
            rows.append(report.error_row(settings, err))
            continue
        row = compile_times.table_row(times)
        print(row, flush=True)
        rows.append(row)
    return compile_times.TABLE_HEADER, rows


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
