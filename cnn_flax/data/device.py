"""Host batches -> globally sharded jax.Arrays, transferred ahead of the step.

Each process holds its slice of the global batch; `jax.make_array_from_process_local_data`
assembles the global array over the mesh's "data" axis without any cross-host copy.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

import jax
import numpy as np


def to_global(
    batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding
) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global jax.Arrays sharded along the leading (batch) axis."""
    count = jax.process_count()
    out = {}
    for key, value in batch.items():
        global_shape = (value.shape[0] * count, *value.shape[1:])
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


def process_rows(sharding: jax.sharding.Sharding, global_batch: int) -> np.ndarray:
    """The rows of a [global_batch, ...] array that this process holds under `sharding`, in the
    order `make_array_from_process_local_data` takes them from the process's batch (its devices'
    slices, sorted). The input pipeline fills exactly these rows, so a global batch is the same
    whatever the number of processes or the order of their devices in the mesh."""
    rows: set[int] = set()
    for index in sharding.addressable_devices_indices_map((global_batch,)).values():
        rows.update(range(global_batch)[index[0]])
    return np.array(sorted(rows), np.int64)


def prefetch_to_device(
    batches: Iterable[dict[str, np.ndarray]], sharding: jax.sharding.Sharding, *, size: int = 2
) -> Iterator[dict[str, jax.Array]]:
    """Keeps `size` batches in flight: device transfers are asynchronous, so while the step
    runs on batch i, batches i+1..i+size are already being copied."""
    if size < 1:
        raise ValueError(f"prefetch size must be >= 1, got {size}")
    queue: collections.deque = collections.deque()
    iterator = iter(batches)
    for batch in iterator:
        queue.append(to_global(batch, sharding))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
