"""Train steps of several variants, alternated step by step, for machines shared with other jobs.

    python -m cnn_flax.perf.interleaved --model=resnet50 --batch-size=16 --conv=model,cpu \
        --rounds=5 [--torch]

``python -m cnn_flax.benchmark`` times cnn_flax first and torchvision after it, so on a machine
whose load changes from minute to minute the two see different loads. Here every variant is
compiled first, then each round runs one step of each variant in turn, so a change of load hits
all of them alike; the median step of each is reported, with the load range. The variants are
cnn_flax's train step with each ``--conv`` preset and, with ``--torch``, torchvision's model in
eager channels_last (float32; PyTorch's fastest CPU variant in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from cnn_flax.perf import jax_bench


def _jax_step(settings: jax_bench.Settings) -> Callable[[], None]:
    prepared = jax_bench.prepare(settings)
    start = time.perf_counter()
    compiled = jax_bench.lower(prepared).compile()
    print(f"{settings.model} conv={settings.conv}: compiled in {time.perf_counter() - start:.1f} s")
    run_steps = jax_bench.run_steps_fn(compiled, prepared)
    return lambda: run_steps(1)


def _torch_step(model: str, *, batch_size: int, resolution: int) -> Callable[[], None]:
    import torch

    from cnn_flax.models import model_info
    from cnn_flax.perf import torch_bench

    name = model_info(model).torchvision
    device = torch.device("cpu")
    net = torch_bench.build_model(name, device, channels_last=True)
    run_steps = torch_bench.make_runner(
        net,
        mode="train",
        dtype="float32",
        device=device,
        batch_size=batch_size,
        resolution=resolution,
        channels_last=True,
    )
    return lambda: run_steps(1)


def run(
    model: str, *, convs: Sequence[str], batch_size: int, resolution: int | None,
    rounds: int, torch: bool,
) -> list[str]:  # fmt: skip
    """Report lines: the median step of each variant and its speed relative to torch."""
    from cnn_flax.models import model_info

    info = model_info(model)
    if torch and info.torchvision is None:  # before minutes of compiling
        raise ValueError(f"{model} has no torchvision counterpart; drop --torch.")
    res = resolution or info.resolution
    steps = {}
    for conv in convs:
        settings = jax_bench.Settings(
            model=model, batch_size=batch_size, dtype="float32", resolution=res, conv=conv
        )
        steps[f"cnn_flax conv={conv}"] = _jax_step(settings)
    if torch:
        steps["torchvision channels_last"] = _torch_step(
            model, batch_size=batch_size, resolution=res
        )
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    loads = []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    loads.append(os.getloadavg()[0])
    medians = {name: statistics.median(t) for name, t in times.items()}
    reference = medians.get("torchvision channels_last")
    lines = [
        f"{model}, batch {batch_size}, {res} px, float32 train step, {rounds} rounds, "
        f"1-minute load {min(loads):.1f}-{max(loads):.1f}"
    ]
    for name, median in medians.items():
        ratio = "" if reference is None else f"  ratio vs torch: {reference / median:.2f}"
        lines.append(
            f"  {name:28s} {1e3 * median:9.1f} ms  {batch_size / median:7.2f} img/s{ratio}  "
            f"(steps: {', '.join(f'{t:.2f}' for t in times[name])} s)"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnn_flax.perf.interleaved", description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--conv", default="model,cpu", help="comma-separated --conv presets")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--torch", action="store_true", help="also torchvision channels_last")
    args = p.parse_args(argv)
    try:
        lines = run(
            args.model,
            convs=[c for c in args.conv.split(",") if c],
            batch_size=args.batch_size,
            resolution=args.resolution,
            rounds=args.rounds,
            torch=args.torch,
        )
    except (ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
