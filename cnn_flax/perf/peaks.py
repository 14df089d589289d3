"""Peak dense throughput of known accelerators, for model FLOPs utilisation (MFU).

MFU (Chowdhery et al. 2022, "PaLM", appendix B) divides the FLOPs the model needs by what the
chip could do at its peak in the same time. The peaks are the vendors' dense (no structured
sparsity) figures per JAX device, so a TPU v2/v3 device is one TensorCore (half a chip) and a
TPU v4/v5p device is a whole megacore chip.

The ``float32`` column is the rate float32 inputs get at JAX's default matmul precision: NVIDIA
Ampere and later run float32 convolutions and matmuls on TF32 tensor cores, so their TF32 peak
is used; TPUs run them as bfloat16 passes, so their bfloat16 peak is used; V100 has neither TF32
nor bfloat16 tensor cores, so both columns hold its FP32 peak (bfloat16 is not faster there).

The ``float16`` column is the FP16 tensor-core peak: equal to bfloat16 on Ampere and later, the
tensor-core figure on V100 (which has FP16 tensor cores only). TPUs have no float16 matrix unit,
so their entry is ``None`` and a float16 run there reports achieved FLOP/s instead of MFU.
"""

from __future__ import annotations

import dataclasses

TERA = 1e12


@dataclasses.dataclass(frozen=True)
class Peak:
    """Dense peak FLOP/s of one device.

    Attributes:
      name: a readable device name.
      bfloat16: peak for bfloat16 inputs (FLOP/s).
      float32: peak for float32 inputs at JAX's default precision (FLOP/s), see module doc.
      float16: peak for float16 inputs (FLOP/s), or ``None`` where the device has no float16
        matrix unit (TPUs).
      source: where the figure comes from.
    """

    name: str
    bfloat16: float
    float32: float
    float16: float | None
    source: str


# Matched in order against ``jax.Device.device_kind`` (case-insensitive substring), so the more
# specific names come first ("H100 PCIe" before "H100", "TPU v5 lite" before "TPU v5").
PEAKS: tuple[tuple[str, Peak], ...] = (
    (
        "h100 pcie",
        Peak("H100 PCIe", 756.0 * TERA, 378.0 * TERA, 756.0 * TERA, "NVIDIA H100 datasheet"),
    ),
    (
        "h100 nvl",
        Peak("H100 NVL", 835.0 * TERA, 417.5 * TERA, 835.0 * TERA, "NVIDIA H100 datasheet"),
    ),
    ("h100", Peak("H100 SXM", 989.4 * TERA, 494.7 * TERA, 989.4 * TERA, "NVIDIA H100 datasheet")),
    ("h200", Peak("H200", 989.4 * TERA, 494.7 * TERA, 989.4 * TERA, "NVIDIA H200 datasheet")),
    ("gh200", Peak("GH200", 989.4 * TERA, 494.7 * TERA, 989.4 * TERA, "NVIDIA GH200 datasheet")),
    (
        "b200",
        Peak("B200", 2250.0 * TERA, 1100.0 * TERA, 2250.0 * TERA, "NVIDIA DGX B200 datasheet"),
    ),
    ("a100", Peak("A100", 312.0 * TERA, 156.0 * TERA, 312.0 * TERA, "NVIDIA A100 datasheet")),
    ("a10g", Peak("A10G", 70.0 * TERA, 35.0 * TERA, 70.0 * TERA, "AWS G5 / NVIDIA A10G")),
    ("a10", Peak("A10", 125.0 * TERA, 62.5 * TERA, 125.0 * TERA, "NVIDIA A10 datasheet")),
    ("l40s", Peak("L40S", 362.05 * TERA, 183.0 * TERA, 362.05 * TERA, "NVIDIA L40S datasheet")),
    ("l4", Peak("L4", 121.0 * TERA, 60.0 * TERA, 121.0 * TERA, "NVIDIA L4 datasheet")),
    (
        "v100-pcie",
        Peak(
            "V100 PCIe",
            14.0 * TERA,
            14.0 * TERA,
            112.0 * TERA,
            "NVIDIA V100 datasheet (FP32, FP16 tensor)",
        ),
    ),
    (
        "v100",
        Peak(
            "V100 SXM2",
            15.7 * TERA,
            15.7 * TERA,
            125.0 * TERA,
            "NVIDIA V100 datasheet (FP32, FP16 tensor)",
        ),
    ),
    (
        "tpu v2",
        Peak("TPU v2 core", 22.5 * TERA, 22.5 * TERA, None, "Google Cloud TPU docs, per core"),
    ),
    (
        "tpu v3",
        Peak("TPU v3 core", 61.5 * TERA, 61.5 * TERA, None, "Google Cloud TPU docs, per core"),
    ),
    ("tpu v4", Peak("TPU v4", 275.0 * TERA, 275.0 * TERA, None, "Google Cloud TPU docs")),
    ("tpu v5 lite", Peak("TPU v5e", 197.0 * TERA, 197.0 * TERA, None, "Google Cloud TPU docs")),
    ("tpu v5e", Peak("TPU v5e", 197.0 * TERA, 197.0 * TERA, None, "Google Cloud TPU docs")),
    ("tpu v5", Peak("TPU v5p", 459.0 * TERA, 459.0 * TERA, None, "Google Cloud TPU docs")),
    ("tpu v6 lite", Peak("TPU v6e", 918.0 * TERA, 918.0 * TERA, None, "Google Cloud TPU docs")),
    ("tpu v6e", Peak("TPU v6e", 918.0 * TERA, 918.0 * TERA, None, "Google Cloud TPU docs")),
)


def lookup_peak(device_kind: str) -> Peak | None:
    """The :class:`Peak` for a ``jax.Device.device_kind``, or ``None`` when unknown (e.g. CPU)."""
    kind = device_kind.lower()
    for pattern, peak in PEAKS:
        if pattern in kind:
            return peak
    return None


DTYPES = ("bfloat16", "float32", "float16")


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of ``device_kind`` for compute ``dtype`` (one of :data:`DTYPES`).

    The one table behind both the benchmark's MFU and the trainer's.

    Returns ``None`` for devices not in the table (CPUs among them) and for float16 on TPUs:
    report achieved FLOP/s then.

    Raises:
      ValueError: for a dtype without a column.
    """
    if dtype not in DTYPES:
        raise ValueError(f"No peak column for dtype {dtype!r}; use one of {DTYPES}.")
    peak = lookup_peak(device_kind)
    return None if peak is None else getattr(peak, dtype)
