"""A profiler trace of a few benchmark steps, and a per-op summary of such a trace.

    python -m cnn_flax.benchmark --model=resnet50 ... --profile=DIR     # writes the trace
    python -m cnn_flax.perf.profile DIR [--top=30]                     # summarises it

The trace is JAX's (``jax.profiler.trace``): TensorBoard's profile plugin or Perfetto open it.
The summary adds up the time of every event per XLA operation (the HLO instruction names that
XLA:CPU's thunks and GPU kernels carry) and per kind of operation (the name without its
``.N`` suffix: ``ynn_fusion``, ``transpose_copy_fusion``, a kernel's name), for each device
and host thread line. That is how the slow XLA:CPU kernel gradients were found (see
``benchmarks/RESULTS.md``). Reading the trace needs the XPlane protocol buffer definitions,
which TensorFlow ships; the machine that writes a trace does not need them.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import sys
from collections.abc import Callable, Sequence

import jax


def trace_steps(run_steps: Callable[[int], None], directory: str, *, steps: int = 2) -> str:
    """Runs ``run_steps(steps)`` (already compiled and warm) under the profiler."""
    path = pathlib.Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    with jax.profiler.trace(str(path)):
        run_steps(steps)
    return str(path)


def _xspace(directory: str):
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError as err:
        raise ValueError(
            f"reading a trace needs TensorFlow's XPlane definitions ({err}); run the summary "
            "on a machine with tensorflow installed."
        ) from None
    files = sorted(pathlib.Path(directory).expanduser().glob("**/*.xplane.pb"))
    if not files:
        raise ValueError(f"no *.xplane.pb under {directory!r}; pass the --profile directory.")
    space = xplane_pb2.XSpace()
    space.ParseFromString(files[-1].read_bytes())
    return space


def _skip(name: str) -> bool:
    # Executor bookkeeping that spans the operations it runs.
    return name.startswith(("ThunkExecutor", "end: ", "$")) or name in ("", "python")


def summarize(directory: str, *, top: int = 30) -> list[str]:
    """Lines of per-kind and per-op totals (milliseconds) for each plane of the trace."""
    lines = []
    for plane in _xspace(directory).planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        per_op: collections.Counter = collections.Counter()
        per_kind: collections.Counter = collections.Counter()
        counts: collections.Counter = collections.Counter()
        for line in plane.lines:
            if line.name == "python" or "PjRt" in line.name:
                continue  # the host waiting for the device, not work
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if _skip(name):
                    continue
                ms = event.duration_ps / 1e9
                kind = re.sub(r"\.\d+$", "", name)
                per_op[name] += ms
                per_kind[kind] += ms
                counts[kind] += 1
        if not per_kind:
            continue
        total = sum(per_kind.values())
        lines.append(f"{plane.name}: {total:.1f} ms in {sum(counts.values())} events")
        lines.append("  by kind:")
        for kind, ms in per_kind.most_common(top):
            lines.append(f"  {ms:10.1f} ms {100 * ms / total:5.1f}%  x{counts[kind]:<5d} {kind}")
        lines.append("  by op:")
        for name, ms in per_op.most_common(top):
            lines.append(f"  {ms:10.1f} ms {100 * ms / total:5.1f}%  {name}")
    if not lines:
        raise ValueError(f"the trace under {directory!r} has no timed operations.")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnn_flax.perf.profile", description=__doc__)
    p.add_argument("directory", help="the benchmark's --profile directory")
    p.add_argument("--top", type=int, default=30, help="rows per table")
    args = p.parse_args(argv)
    try:
        print("\n".join(summarize(args.directory, top=args.top)))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
