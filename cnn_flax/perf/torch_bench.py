"""The torchvision side of ``--compare=torch``: the same model, batch and precision in PyTorch.

This is the only cnn_flax module that imports torch, and only inside functions, so the rest of
the package and the benchmark without ``--compare`` work where torch is not installed.

Variants: eager NCHW (PyTorch's default layout), eager channels_last (NHWC in memory, which
cuDNN and oneDNN prefer for convolutions), and ``torch.compile`` of the channels_last model.
bfloat16 uses autocast, PyTorch's usual mixed precision: float32 weights, bfloat16 compute.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cnn_flax.perf import rates, timing

VARIANTS = ("eager", "channels_last", "compile")


@dataclasses.dataclass(frozen=True)
class TorchResult:
    """One torchvision variant: images per second, or why it could not run."""

    variant: str
    images_per_s: float | None
    step_s: float | None = None
    note: str = ""

    def describe(self) -> str:
        if self.images_per_s is None:
            return f"n/a: {self.note}"
        return f"{self.images_per_s:.1f} img/s (step {self.step_s * 1e3:.1f} ms)"


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def build_model(torchvision_name: str, device: Any, *, channels_last: bool):
    """torchvision's model, randomly initialised (seed 0), on ``device``."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(torchvision_name, weights=None, num_classes=1000)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_runner(
    model,
    *,
    mode: str,
    dtype: str,
    device: Any,
    batch_size: int,
    resolution: int,
    channels_last: bool,
):
    """``run_steps(n)``: n train steps (SGD momentum) or eval forwards, then one device sync."""
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, resolution, resolution, generator=gen).to(device)
    images = images.contiguous(memory_format=fmt)
    labels = torch.randint(0, 1000, (batch_size,), generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step() -> None:
            with autocast:
                out = model(images)
                logits = out[0] if isinstance(out, tuple) else out
                loss = loss_fn(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast:
                model(images)

    def run_steps(n: int) -> None:
        for _ in range(n):
            step()
        sync()

    return run_steps


def run_torchvision(
    torchvision_name: str,
    *,
    mode: str,
    dtype: str,
    batch_size: int,
    resolution: int,
    steps: int,
    windows: int,
    warmup: int,
    variants: tuple[str, ...] = VARIANTS,
) -> list[TorchResult]:
    """Times each torchvision variant; a variant that fails is reported, not raised.

    Runs on CUDA when available, else on the CPU with PyTorch's default thread count.
    """
    try:
        import torch
    except ImportError as err:
        return [TorchResult(v, None, note=f"torch not installed ({err})") for v in variants]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"Unknown torch variants {sorted(unknown)}; choose from {VARIANTS}.")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        # Let cuDNN pick the fastest convolution algorithms, as a tuned PyTorch run would.
        torch.backends.cudnn.benchmark = True
    results = []
    for variant in variants:
        channels_last = variant != "eager"
        try:
            model = build_model(torchvision_name, device, channels_last=channels_last)
            if variant == "compile":
                model = torch.compile(model)
            run_steps = make_runner(
                model,
                mode=mode,
                dtype=dtype,
                device=device,
                batch_size=batch_size,
                resolution=resolution,
                channels_last=channels_last,
            )
            seconds = timing.time_windows(run_steps, steps=steps, windows=windows, warmup=warmup)
            step_s = rates.step_time(seconds, steps // windows)
            results.append(
                TorchResult(variant, rates.images_per_second(batch_size, step_s), step_s)
            )
        except Exception as err:  # noqa: BLE001 - a failing variant is reported as n/a
            results.append(TorchResult(variant, None, note=_one_line(err)))
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def torch_device_name() -> str:
    """Where the torch side runs, e.g. ``cuda:NVIDIA H100 80GB HBM3`` or ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def fastest(results: list[TorchResult]) -> TorchResult | None:
    """The variant with the most images per second, or ``None`` if none ran."""
    ran = [r for r in results if r.images_per_s is not None]
    return max(ran, key=lambda r: r.images_per_s) if ran else None
