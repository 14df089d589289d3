"""One process of tests/data/test_multiprocess.py:
``python -m tests.data.multiprocess_worker ID N PORT DATA_DIR OUT``. Each process has 2 simulated
CPU devices and gloo collectives; process 0 writes the global batches it gathered to OUT."""

from __future__ import annotations

import os
import sys

import ml_collections

STEPS = 4
RESUME_AT = 2
GLOBAL_BATCH = 8


def train_config(data_dir: str) -> ml_collections.ConfigDict:
    """Digits, 20 train examples (4 steps of 8 cross an epoch), crop + flip + repeated aug."""
    from tests.data.conftest import data_config

    return data_config(
        "digits",
        data_dir,
        train_split="train[:20]",
        repeated_augmentation=2,
        augment=dict(inception_crop=True, flip=True),
    )


def global_batches(data_dir: str, sharding, *, start_step: int, steps: int) -> dict:
    """The global batches of the real train iterator, gathered on every process as numpy."""
    import numpy as np
    from jax.experimental import multihost_utils

    from cnn_flax import data

    iterator = data.create_train_iterator(
        train_config(data_dir),
        global_batch_size=GLOBAL_BATCH,
        seed=7,
        start_step=start_step,
        sharding=sharding,
    )
    batches = [next(iterator) for _ in range(steps)]
    return {
        key: np.stack([multihost_utils.process_allgather(b[key], tiled=True) for b in batches])
        for key in ("image", "label")
    }


def main(process_id: int, num_processes: int, port: int, data_dir: str, out: str) -> None:
    import jax
    import numpy as np

    from cnn_flax.training import parallel

    parallel.initialize_distributed(
        coordinator_address=f"localhost:{port}",
        num_processes=num_processes,
        process_id=process_id,
    )
    assert jax.device_count() == 2 * num_processes, jax.devices()
    sharding = parallel.data_sharding(parallel.create_mesh())
    full = global_batches(data_dir, sharding, start_step=0, steps=STEPS)
    resumed = global_batches(data_dir, sharding, start_step=RESUME_AT, steps=STEPS - RESUME_AT)
    if process_id == 0:
        np.savez(out, **full, resumed_image=resumed["image"], resumed_label=resumed["label"])
    jax.distributed.shutdown()


if __name__ == "__main__":
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pid, n, port = (int(a) for a in sys.argv[1:4])
    main(pid, n, port, sys.argv[4], sys.argv[5])
