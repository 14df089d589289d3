"""Mesh, shardings and multi-host initialisation helpers."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cnn_flax.training import parallel


def test_mesh_spans_every_device():
    mesh = parallel.create_mesh()
    assert mesh.axis_names == (parallel.DATA_AXIS,)
    assert mesh.size == jax.device_count() == 8


def test_batch_is_split_and_state_replicated():
    mesh = parallel.create_mesh()
    batch = jax.make_array_from_process_local_data(
        parallel.data_sharding(mesh), np.arange(16.0).reshape(16, 1)
    )
    assert {s.data.shape for s in batch.addressable_shards} == {(2, 1)}
    state = parallel.replicate({"w": np.ones(3)}, mesh)
    assert {s.data.shape for s in state["w"].addressable_shards} == {(3,)}
    assert state["w"].sharding.is_fully_replicated


def test_indivisible_batch_names_the_fix():
    with pytest.raises(ValueError, match=r"batch_size=12 .* 8 devices.*batch_size=8"):
        parallel.check_batch_size(12, parallel.create_mesh())


def test_single_process_needs_no_coordinator(monkeypatch):
    for name in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert parallel.initialize_distributed() is False


def test_partial_multiprocess_flags_are_refused():
    with pytest.raises(ValueError, match="needs all of --coordinator_address"):
        parallel.initialize_distributed(coordinator_address="localhost:1234")
