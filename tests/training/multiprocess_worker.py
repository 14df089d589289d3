"""One process of the 2-process test: ``python -m tests.training.multiprocess_worker ID N PORT
WORKDIR OUT``. Each process has 2 simulated CPU devices; gloo carries the collectives."""

from __future__ import annotations

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"


def main(process_id: int, num_processes: int, port: int, workdir: str, out: str) -> None:
    import jax
    import numpy as np

    from cnn_flax.training import parallel, trainer
    from tests.training import fakes

    parallel.initialize_distributed(
        coordinator_address=f"localhost:{port}",
        num_processes=num_processes,
        process_id=process_id,
    )
    assert jax.device_count() == 2 * num_processes, jax.devices()
    fakes.register_tiny_model()
    result = trainer.train(
        fakes.multiprocess_config(), workdir, data_source=fakes.FakeData(), show_progress=False
    )
    if process_id == 0:
        leaves = jax.tree.leaves(fakes.params_of(result.state))
        np.savez(out, *leaves, top1=result.eval_metrics["eval_top1"])
    jax.distributed.shutdown()


if __name__ == "__main__":
    pid, n, port = (int(a) for a in sys.argv[1:4])
    main(pid, n, port, sys.argv[4], sys.argv[5])
