"""The cnn_flax side of the benchmark: compile, time and measure one model on one device."""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from cnn_flax.configs.base import get_base_config
from cnn_flax.models import model_info
from cnn_flax.perf import jax_steps, peaks, rates, timing
from cnn_flax.perf.flops import forward_flops
from cnn_flax.training import model_builder

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to benchmark and how.

    Attributes:
      model: registered model name.
      batch_size: images per step.
      dtype: compute dtype, "bfloat16" or "float32".
      mode: "train" (forward, backward, SGD-momentum update, BN statistics) or "infer".
      resolution: input size; ``None`` uses the model's default.
      steps: timed steps (a multiple of ``windows``).
      windows: timing windows; the step time is the median window's mean.
      warmup: untimed steps after compilation.
      remat: rematerialisation policy for training (see ``jax_steps.REMAT_POLICIES``).
      step: "auto" (the trainer's step where it can be built and no whole-step remat is asked),
        "trainer" (``cnn_flax.training.steps``) or "minimal" (``cnn_flax.perf.jax_steps``).
      conv: "model" (the model's own convolution) or a preset of
        ``cnn_flax.models.depthwise.PRESETS`` ("xla", "shift", "cpu").
    """

    model: str
    batch_size: int = 32
    dtype: str = "bfloat16"
    mode: str = "train"
    resolution: int | None = None
    steps: int = 20
    windows: int = 5
    warmup: int = 3
    remat: str = "none"
    step: str = "auto"
    conv: str = "model"


@dataclasses.dataclass(frozen=True)
class Memory:
    """Peak memory and where the figure comes from."""

    bytes: int | None
    source: str

    def describe(self) -> str:
        if self.bytes is None:
            return f"n/a ({self.source})"
        return f"{self.bytes / 2**30:.2f} GiB ({self.source})"


@dataclasses.dataclass(frozen=True)
class Result:
    """Measurements of one benchmark run."""

    settings: Settings
    resolution: int
    device: str
    compile_s: float
    step_s: float
    window_s: tuple[float, ...]
    images_per_s: float
    forward_flops_per_image: float
    step_flops: float
    achieved_flops_per_s: float
    mfu: float | None
    peak_memory: Memory
    xla_memory: Memory
    step_impl: str = ""
    # The compiled step and its inputs, for the real-data and profile passes that follow.
    compiled: Any = dataclasses.field(default=None, repr=False, compare=False)
    prepared: Any = dataclasses.field(default=None, repr=False, compare=False)


MINIMAL_DESCRIPTION = "cnn_flax.perf.jax_steps (minimal SGD-momentum step, donated state)"


def _choose_step(settings: Settings) -> str:
    """ "trainer" or "minimal", validating an explicit choice."""
    from cnn_flax.perf import trainer_step

    if settings.step not in ("auto", "trainer", "minimal"):
        raise ValueError(f"--step={settings.step!r}: use 'auto', 'trainer' or 'minimal'.")
    if settings.step == "minimal":
        return "minimal"
    reason = trainer_step.available()
    whole_step_remat = settings.remat in ("dots", "full")
    if settings.step == "trainer":
        if whole_step_remat:
            raise ValueError(
                f"--remat={settings.remat} wraps the whole step and needs --step=minimal; "
                "--remat=blocks works with either step."
            )
        if reason:
            raise ValueError(f"--step=trainer is unavailable here ({reason}); use --step=minimal.")
        return "trainer"
    return "trainer" if reason is None and not whole_step_remat else "minimal"


def model_config(settings: Settings) -> ml_collections.ConfigDict:
    """The training config whose model ``settings`` benchmarks: the base recipe with its model,
    compute dtype and convolution preset (``conv="model"``: the model's own, the backend's
    "auto"). The model is built from it by the trainer's own builder, so the benchmark times the
    network ``python -m cnn_flax.train`` would train."""
    config = get_base_config()
    config.model = settings.model
    config.dtype = settings.dtype
    if settings.conv != "model":
        config.model_overrides.conv = settings.conv
    return config


def _dtype(name: str) -> jnp.dtype:
    if name not in DTYPES:
        raise ValueError(f"--dtype={name!r} is not supported; use one of {sorted(DTYPES)}.")
    return DTYPES[name]


def utilisation(
    step_flops: float, step_s: float, *, device_kind: str, dtype: str
) -> tuple[float, float | None]:
    """``(achieved FLOP/s, MFU or None)`` of one device running ``step_flops`` in ``step_s``.

    The peak comes from :mod:`cnn_flax.perf.peaks` in the benchmark's compute dtype, the table
    the trainer's MFU uses too.
    """
    peak = peaks.peak_flops(device_kind, dtype)
    return rates.achieved_flops_per_second(step_flops, step_s), rates.mfu(step_flops, step_s, peak)


def peak_memory(device: jax.Device) -> Memory:
    """The device's peak bytes in use, or the process's peak RSS where the device keeps none."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return Memory(int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use")
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return Memory(int(rss_kib) * 1024, "no device stats; process peak RSS")


def _xla_memory(compiled) -> Memory:
    """Argument + output + temporary bytes XLA planned for the step (aliased bytes once)."""
    try:
        m = compiled.memory_analysis()
        total = (
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )
        return Memory(int(total), "XLA plan: args + outputs + temps")
    except Exception as err:  # noqa: BLE001 - not every backend implements it
        return Memory(None, f"XLA memory analysis unavailable: {err}")


@dataclasses.dataclass
class Prepared:
    """A step ready to compile: the function, its (donated) first argument and the rest."""

    step_fn: Callable
    state: Any
    inputs: tuple
    step_impl: str
    resolution: int
    donate: bool


def prepare(settings: Settings) -> Prepared:
    """The model, its state and the step ``settings`` asks for, on synthetic inputs."""
    info = model_info(settings.model)
    res = settings.resolution or info.resolution
    _dtype(settings.dtype)  # the benchmark's dtypes, refused with the flag's name
    if settings.mode not in ("train", "infer"):
        raise ValueError(f"--mode={settings.mode!r} is not supported; use 'train' or 'infer'.")
    model = model_builder.build_model(model_config(settings), num_classes=1000, num_devices=1)
    if settings.mode == "train" and settings.remat == "blocks":
        model = jax_steps.remat_blocks(model)
    key = jax.random.key(1)
    images = jax.random.normal(key, (settings.batch_size, res, res, 3), jnp.float32)
    labels = jax.random.randint(key, (settings.batch_size,), 0, 1000, jnp.int32)
    tx = jax_steps.sgd_momentum()
    if settings.mode == "train" and _choose_step(settings) == "trainer":
        from cnn_flax.perf import trainer_step

        step_fn, state, batch_ = trainer_step.build(
            model, dtype=settings.dtype, batch_size=settings.batch_size, resolution=res
        )
        return Prepared(step_fn, state, (batch_,), trainer_step.DESCRIPTION, res, True)
    state = jax_steps.init_state(model, resolution=res, tx=tx)
    if settings.mode == "train":
        step_fn = jax_steps.make_train_step(model, tx, remat=settings.remat)
        return Prepared(step_fn, state, (images, labels), MINIMAL_DESCRIPTION, res, True)
    variables = {"params": state["params"]}
    if state["batch_stats"]:
        variables["batch_stats"] = state["batch_stats"]
    infer = jax_steps.make_infer_step(model)
    return Prepared(infer, variables, (images,), "model.apply(train=False)", res, False)


def lower(prepared: Prepared):
    """``jax.jit(step).lower(...)``: tracing and lowering to StableHLO (not cached on disk)."""
    jitted = jax.jit(prepared.step_fn, donate_argnums=0 if prepared.donate else ())
    return jitted.lower(prepared.state, *prepared.inputs)


def run_steps_fn(compiled, prepared: Prepared) -> Callable[[int], None]:
    """``run_steps(n)``: n steps back to back, then one wait for the device."""
    if prepared.donate:

        def run_steps(n: int) -> None:
            # The state is donated: keep the newest one, the only one still alive.
            s = prepared.state
            for _ in range(n):
                s, _ = compiled(s, *prepared.inputs)
            prepared.state = jax.block_until_ready(s)

        return run_steps

    def run_infer(n: int) -> None:
        jax.block_until_ready([compiled(prepared.state, *prepared.inputs) for _ in range(n)])

    return run_infer


def run(settings: Settings) -> Result:
    """Compiles and times ``settings.model`` on the default device with synthetic data.

    The images and labels are created on the device once; nothing crosses the host boundary
    inside the timed windows except the final wait for the device. The compile time is printed
    as soon as it is known, so a run that hangs later still says how far it got.
    """
    prepared = prepare(settings)
    res = prepared.resolution
    dtype = _dtype(settings.dtype)
    device = jax.devices()[0]
    start = time.perf_counter()
    compiled = lower(prepared).compile()
    compile_s = time.perf_counter() - start
    print(f"{settings.model}: compiled in {compile_s:.2f} s", flush=True)
    windows = timing.time_windows(
        run_steps_fn(compiled, prepared),
        steps=settings.steps,
        windows=settings.windows,
        warmup=settings.warmup,
    )
    step_s = rates.step_time(windows, settings.steps // settings.windows)
    fwd = forward_flops(settings.model, resolution=res, batch=settings.batch_size, dtype=dtype)
    step_flops = rates.model_flops_per_step(fwd, batch_size=settings.batch_size, mode=settings.mode)
    achieved, mfu = utilisation(
        step_flops, step_s, device_kind=device.device_kind, dtype=settings.dtype
    )
    return Result(
        settings=settings,
        resolution=res,
        device=f"{device.platform}:{device.device_kind}",
        compile_s=compile_s,
        step_s=step_s,
        window_s=tuple(windows),
        images_per_s=rates.images_per_second(settings.batch_size, step_s),
        forward_flops_per_image=fwd,
        step_flops=step_flops,
        achieved_flops_per_s=achieved,
        mfu=mfu,
        peak_memory=peak_memory(device),
        xla_memory=_xla_memory(compiled),
        step_impl=prepared.step_impl,
        compiled=compiled,
        prepared=prepared,
    )
