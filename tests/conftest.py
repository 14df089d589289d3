"""Shared test set-up: CPU only, several simulated devices, small shapes."""

import os

# Tests run on CPU with 8 simulated devices so data parallelism is exercised without accelerators.
# This must happen before jax is imported anywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
