"""Devices, mesh and shardings for data-parallel training with ``jax.jit``.

One :class:`jax.sharding.Mesh` with a single ``"data"`` axis spans every device of every process.
The training state is replicated over it and the batch is split along it; XLA's SPMD partitioner
inserts the gradient all-reduce (and, for global BatchNorm, the statistics all-reduce) itself. This
replaces ``pmap``: the same program scales from one CPU to many hosts, and other partitionings
(e.g. a ``"model"`` axis) only need another mesh axis, not a rewrite.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# Environment variables that mean "a cluster launched this process": jax.distributed.initialize()
# can then find the coordinator, process count and index without flags.
_AUTO_DETECT_ENV = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize_distributed(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Connects the processes of a multi-host job; a no-op for a single process.

    With explicit arguments, uses them (any cluster). Without, calls
    ``jax.distributed.initialize()`` only when a cluster environment (SLURM, Cloud TPU) is
    detected, so a plain single-machine run never waits for a coordinator. On CPU the
    collectives between processes go through gloo.

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: total number of processes.
      process_id: index of this process, ``0 <= process_id < num_processes``.

    Returns:
      Whether ``jax.distributed.initialize`` was called.

    Raises:
      ValueError: when only some of the three arguments are given.
    """
    given = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in given) and any(v is None for v in given):
        raise ValueError(
            "Multi-process training needs all of --coordinator_address, --num_processes and "
            f"--process_id (got {coordinator_address!r}, {num_processes!r}, {process_id!r}); "
            "pass all three, or none to auto-detect SLURM/TPU."
        )
    explicit = coordinator_address is not None
    if not explicit and not any(name in os.environ for name in _AUTO_DETECT_ENV):
        return False
    if jax.config.jax_platforms in ("cpu",) or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    else:
        jax.distributed.initialize()
    return True


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Splits the leading (batch) dimension over the ``"data"`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (the training state)."""
    return NamedSharding(mesh, PartitionSpec())


def lower_on_mesh(jitted: Any, mesh: Mesh, *args: Any) -> Any:
    """``jitted.lower(*args)`` with ``mesh`` in context (``jax.set_mesh``).

    Code traced inside can then see how the batch is split: the models' convolutions use it to
    keep grouped convolutions and chunked kernel gradients on each device's shard of the batch
    (:func:`cnn_flax.models.depthwise.batch_local`), which XLA's partitioner alone does not.
    """
    with jax.set_mesh(mesh):
        return jitted.lower(*args)


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    """Raises a clear error when the global batch does not split evenly over the devices."""
    if global_batch_size % mesh.size:
        raise ValueError(
            f"batch_size={global_batch_size} is not divisible by the {mesh.size} devices of the "
            f"mesh; use a multiple of {mesh.size} (e.g. --config.batch_size="
            f"{max(mesh.size, global_batch_size // mesh.size * mesh.size)})."
        )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree of host values as replicated global arrays on ``mesh``."""
    sharding = replicated_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(
            np.shape(x), sharding, lambda idx: np.asarray(x)[idx]
        ),
        tree,
    )
