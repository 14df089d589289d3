"""Cold and warm compile times of a benchmark step, with the persistent cache as a user has it.

Cold: the step compiled into an empty persistent cache (what a first run pays). Warm: the same
step again in the same process after ``jax.clear_caches()``, so the in-memory caches are gone and
XLA's executable comes from the cache on disk (what a second run pays). Tracing and lowering are
timed separately: the persistent cache stores compiled executables, so every run pays them.
JAX's own monitoring events say whether each compile missed or hit the cache, so a "warm" figure
that was in fact recompiled is reported as such rather than taken at face value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterator

import jax
import jax.monitoring
from jax.experimental.compilation_cache import compilation_cache

from cnn_flax.perf import compile_cache, jax_bench

_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"


@dataclasses.dataclass(frozen=True)
class CompileTimes:
    """Seconds to trace + lower the step, and to compile it cold and warm."""

    settings: jax_bench.Settings
    resolution: int
    lower_s: float
    cold_s: float
    warm_s: float
    warm_lower_s: float
    cold_cache: str
    warm_cache: str


@contextlib.contextmanager
def _cache_events() -> Iterator[list[str]]:
    events: list[str] = []

    def listen(name: str, **_: object) -> None:
        if name in (_HIT, _MISS):
            events.append("hit" if name == _HIT else "miss")

    jax.monitoring.register_event_listener(listen)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_listener(listen)


def _lower_and_compile(prepared: jax_bench.Prepared) -> tuple[float, float, str]:
    with _cache_events() as events:
        start = time.perf_counter()
        lowered = jax_bench.lower(prepared)
        lowered_at = time.perf_counter()
        lowered.compile()
        done = time.perf_counter()
    # The step's own executable is the last compile; a step may trigger small ones first.
    return lowered_at - start, done - lowered_at, events[-1] if events else "off"


def measure(settings: jax_bench.Settings) -> CompileTimes:
    """Compiles ``settings``' step twice into a fresh temporary persistent cache.

    The process's cache setting is restored afterwards (the next model gets its own empty
    directory, so no model's cold figure benefits from another's entries).
    """
    prepared = jax_bench.prepare(settings)
    previous = (
        jax.config.jax_enable_compilation_cache,
        jax.config.jax_compilation_cache_dir,
    )
    with tempfile.TemporaryDirectory(prefix="cnn_flax_compile_") as cache_dir:
        compilation_cache.reset_cache()
        compile_cache.enable_compilation_cache(cache_dir)
        try:
            jax.clear_caches()
            lower_s, cold_s, cold_cache = _lower_and_compile(prepared)
            jax.clear_caches()
            warm_lower_s, warm_s, warm_cache = _lower_and_compile(prepared)
        finally:
            compilation_cache.reset_cache()
            jax.config.update("jax_enable_compilation_cache", previous[0])
            jax.config.update("jax_compilation_cache_dir", previous[1])
    return CompileTimes(
        settings=settings,
        resolution=prepared.resolution,
        lower_s=lower_s,
        cold_s=cold_s,
        warm_s=warm_s,
        warm_lower_s=warm_lower_s,
        cold_cache=cold_cache,
        warm_cache=warm_cache,
    )


TABLE_HEADER = (
    "| model | mode | dtype | conv | batch | res | trace+lower s | compile cold s "
    "| compile warm s (cache) | first step total cold / warm s |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(t: CompileTimes) -> str:
    """One markdown row: the cold total is what a first run waits, the warm one a second run."""
    s = t.settings
    return (
        f"| {s.model} | {s.mode} | {s.dtype} | {s.conv} | {s.batch_size} | {t.resolution} "
        f"| {t.lower_s:.1f} | {t.cold_s:.1f} ({t.cold_cache}) | {t.warm_s:.1f} ({t.warm_cache}) "
        f"| {t.lower_s + t.cold_s:.1f} / {t.warm_lower_s + t.warm_s:.1f} |"
    )
