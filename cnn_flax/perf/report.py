"""What the benchmark prints: the per-run report and the markdown table rows."""

from __future__ import annotations

from cnn_flax.models import depthwise
from cnn_flax.perf import torch_bench


def conv_ran(conv: str) -> str:
    """The ``--conv`` setting with the implementations it ran on this backend."""
    return depthwise.describe(depthwise.AUTO if conv == "model" else conv)


def _gflops(x: float) -> str:
    return f"{x / 1e9:.3f}"


def _utilisation(result) -> str:
    if result.mfu is not None:
        return f"{100 * result.mfu:.1f}% MFU"
    return f"{result.achieved_flops_per_s / 1e9:.1f} GFLOP/s"


def _ratio(result, torch_results) -> tuple[str, str]:
    """(fastest torchvision variant, cnn_flax / that) as table text."""
    if torch_results is None:
        return "-", "-"
    best = torch_bench.fastest(torch_results)
    if best is None:
        return "n/a", "n/a"
    return (
        f"{best.images_per_s:.1f} ({best.variant})",
        f"{result.images_per_s / best.images_per_s:.3f}",
    )


def lines(result, torch_results, torch_device: str | None, real=None) -> list[str]:
    """The human-readable report of one run; ``throughput:`` and ``ratio:`` lines are parsed
    by ``benchmarks/gpu_check.sh``."""
    s = result.settings
    out = [
        f"model: {s.model}  mode: {s.mode}  dtype: {s.dtype}  batch: {s.batch_size}  "
        f"resolution: {result.resolution}  remat: {s.remat}  conv: {conv_ran(s.conv)}  "
        f"device: {result.device}",
        f"train step: {result.step_impl}" if s.mode == "train" else "infer: model.apply eval",
        f"compile time: {result.compile_s:.2f} s",
        f"step time: {result.step_s * 1e3:.2f} ms (median of {s.windows} windows x "
        f"{s.steps // s.windows} steps, after {s.warmup} warm-up steps)",
        f"throughput: {result.images_per_s:.1f} img/s",
        f"model FLOPs/image: {_gflops(result.forward_flops_per_image)} GFLOPs forward "
        f"(XLA count); {_gflops(result.step_flops)} GFLOPs per step"
        + (" (3x forward)" if s.mode == "train" else ""),
    ]
    if result.mfu is not None:
        out.append(
            f"MFU: {100 * result.mfu:.2f}% ({result.achieved_flops_per_s / 1e12:.1f} "
            f"TFLOP/s achieved)"
        )
    else:
        out.append(
            f"achieved: {result.achieved_flops_per_s / 1e9:.1f} GFLOP/s (no peak known for "
            f"{result.device}, so no MFU)"
        )
    out.append(f"peak memory: {result.peak_memory.describe()}")
    out.append(f"XLA step memory: {result.xla_memory.describe()}")
    if real is not None:
        out += real.describe()
    if torch_results is not None:
        out.append(f"torchvision ({torch_device}):")
        out += [f"  {r.variant}: {r.describe()}" for r in torch_results]
        _, ratio = _ratio(result, torch_results)
        out.append(
            "ratio: n/a (no torchvision variant ran)" if ratio == "n/a" else f"ratio: {ratio}"
        )
    return out


TABLE_HEADER = (
    "| model | mode | dtype | conv | batch | res | compile s | step ms | img/s | fwd GFLOPs/img "
    "| MFU or GFLOP/s | peak memory | real data img/s (wait ms/step) | torch best img/s "
    "| ratio |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(result, torch_results, real=None) -> str:
    """One markdown table row for a finished run."""
    s = result.settings
    best_txt, ratio = _ratio(result, torch_results)
    mem = result.peak_memory
    mem_txt = "n/a" if mem.bytes is None else f"{mem.bytes / 2**30:.2f} GiB"
    if mem.source.startswith("no device stats"):
        mem_txt += " RSS"
    real_txt = "-"
    if real is not None:
        real_txt = f"{real.images_per_s:.1f} ({real.wait_ms_per_step:.1f}, {real.loader})"
    return (
        f"| {s.model} | {s.mode} | {s.dtype} | {s.conv} | {s.batch_size} | {result.resolution} "
        f"| {result.compile_s:.1f} | {result.step_s * 1e3:.1f} | {result.images_per_s:.1f} "
        f"| {_gflops(result.forward_flops_per_image)} | {_utilisation(result)} | {mem_txt} "
        f"| {real_txt} | {best_txt} | {ratio} |"
    )


def error_row(settings, err: BaseException) -> str:
    """A table row saying that ``settings.model`` failed, and why, in one line."""
    msg = f"{type(err).__name__}: {err}".splitlines()[0][:120].replace("|", "/")
    s = settings
    return f"| {s.model} | {s.mode} | {s.dtype} | {s.conv} | {s.batch_size} | - | error: {msg} |"
