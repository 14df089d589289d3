"""The data API of the trainer: global iterators over a mesh (see notes: Data API).

TensorFlow is imported only when an iterator is built, so importing cnn_flax.data stays light.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax


def get_dataset_info(data_config: Any):
    """DatasetInfo(num_classes, num_train, num_eval) of the configured dataset and splits."""
    from cnn_flax.data import datasets

    return datasets.get_dataset_info(data_config)


def get_class_names(data_config: Any) -> list[str]:
    """The configured data set's class names in label order (see datasets.class_names)."""
    from cnn_flax.data import datasets

    return datasets.class_names(data_config)


def get_held_out_record(data_config: Any) -> dict | None:
    """A folder set's own held-out part, to record in the workdir (see datasets.held_out_record);
    ``None`` when the eval split is not carved out of the training images."""
    from cnn_flax.data import datasets

    return datasets.held_out_record(data_config)


def create_train_iterator(
    data_config: Any,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    sharding: jax.sharding.NamedSharding,
    start_example: int | None = None,
) -> Iterator[dict[str, jax.Array]]:
    """Infinite train batches {"image": uint8 [B, H, W, 3], "label": int32 [B]} sharded over
    `sharding`; batch i is a pure function of (seed, start_step + i), so a resumed run sees
    exactly the batches of an uninterrupted one. Each process computes only the rows it holds;
    for in-memory and file-list data sets the global batches do not depend on the number of
    processes (see pipeline.py). `start_example`: examples of the stream already seen, when they
    are not `start_step` batches of this size (a run resumed with another batch size)."""
    from cnn_flax.data import device, pipeline

    stream = pipeline.TrainStream(
        data_config,
        global_batch_size=global_batch_size,
        seed=seed,
        start_step=start_step,
        start_example=start_example,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        rows=device.process_rows(sharding, global_batch_size),
    )
    size = max(2, int(data_config.prefetch))
    return device.prefetch_to_device(stream, sharding, size=size)


def create_eval_iterator(
    data_config: Any, *, global_batch_size: int, sharding: jax.sharding.NamedSharding
) -> Iterator[dict[str, jax.Array]]:
    """Eval batches {"image", "label", "mask"}: ceil(num_eval / global_batch_size) of them; each
    example of the split appears exactly once with mask True, padding has mask False."""
    from cnn_flax.data import device, pipeline

    ds = pipeline.eval_dataset(
        data_config,
        global_batch_size=global_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return device.prefetch_to_device(ds.as_numpy_iterator(), sharding, size=2)
