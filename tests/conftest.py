"""Shared test set-up: CPU only, several simulated devices, small shapes."""

import contextlib
import os

# Tests run on CPU with 8 simulated devices so data parallelism is exercised without accelerators.
# This must happen before jax is imported anywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torchvision, when present, is imported up front: its first import loads triton's native
# library, and loading that in a process that has already run XLA computations crashed
# (segmentation fault; jaxlib 0.10.2, torch 2.14.1) when a benchmark test imported torchvision
# lazily after the trainer tests. A full run imports it while collecting the parity tests anyway.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401
