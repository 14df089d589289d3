"""Train/eval iterators: exact resumption, disjoint process shards, eval exactly once.

Runtime: ~15 s in all on 2 cores (TensorFlow import and the digits prepare dominate).
"""

from __future__ import annotations

import collections

import jax
import numpy as np
import pytest

from cnn_flax.data import datasets, pipeline
from tests.data.conftest import data_config

AUGMENT = dict(inception_crop=True, flip=True)


def _batches(stream, count):
    iterator = iter(stream)
    return [next(iterator) for _ in range(count)]


def _source(kind: str, digits_dir: str, jpeg_folder: str):
    """(config, source) for each kind of source, small enough that epochs wrap quickly."""
    if kind == "array":
        config = data_config("digits", digits_dir, train_split="train[:45]", augment=AUGMENT)
    elif kind == "files":
        config = data_config(f"folder:{jpeg_folder}", digits_dir, augment=AUGMENT)
    else:  # the record-streaming path, exercised on the digits records (PNG bytes)
        config = data_config(
            "digits", digits_dir, train_split="train[:45]", augment=AUGMENT, shuffle_buffer=16
        )
        builder = datasets.get_source(config).builder
        return config, datasets.TfdsSource(builder, ("train", "test"))
    return config, datasets.get_source(config)


@pytest.mark.parametrize("kind", ["array", "files", "tfds"])
def test_resume_is_bit_identical(kind, digits_dir, jpeg_folder):
    config, source = _source(kind, digits_dir, jpeg_folder)
    kw = dict(global_batch_size=8, seed=3, source=source)
    # Epochs of 21 (files) or 45 examples: 12 steps of 8 wrap them several times, and the batch
    # of step 5 (positions 40-47) straddles an epoch boundary in both.
    full = _batches(pipeline.TrainStream(config, **kw), 12)
    resumed = _batches(pipeline.TrainStream(config, start_step=5, **kw), 7)
    for a, b in zip(full[5:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    other_seed = _batches(pipeline.TrainStream(config, **{**kw, "seed": 4}), 2)
    assert not np.array_equal(other_seed[1]["image"], full[1]["image"])


@pytest.mark.parametrize("kind", ["array", "files", "tfds"])
def test_epochs_are_permutations_of_disjoint_process_shards(kind, digits_dir, jpeg_folder):
    config, source = _source(kind, digits_dir, jpeg_folder)
    config.augment.update(dict(inception_crop=False, flip=False))
    train_split = datasets.splits(config, source)[0]
    n = source.split_size(train_split)
    seen = collections.Counter()
    for process in range(2):
        lo, hi = pipeline.shard_bounds(n, process, 2)
        stream = pipeline.TrainStream(
            config,
            global_batch_size=2,
            seed=0,
            process_index=process,
            process_count=2,
            source=source,
        )
        batches = _batches(stream, (hi - lo) // 1 + 2)
        labels = np.concatenate([b["label"] for b in batches])[: hi - lo]
        images = np.concatenate([b["image"] for b in batches])[: hi - lo]
        seen.update(img.tobytes() + bytes([lab]) for img, lab in zip(images, labels))
    everything = pipeline.eval_dataset(
        data_config(config.name, config.data_dir, eval_split=train_split),
        global_batch_size=1,
        source=source,
    )
    expected = collections.Counter(
        img.tobytes() + bytes([lab])
        for batch in everything.as_numpy_iterator()
        for img, lab in zip(batch["image"], batch["label"])
    )
    assert seen == expected


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_sees_every_example_exactly_once(process_count, digits_dir):
    config = data_config("digits", digits_dir)  # test split: 360 examples
    num_eval = datasets.get_dataset_info(config).num_eval
    global_batch = 64  # 360 = 5 * 64 + 40: the last batch is padded
    source = datasets.get_source(config)
    reference = collections.Counter(
        img.tobytes() + bytes([lab])
        for img, lab in zip(source.arrays("test")["image"], source.arrays("test")["label"])
    )
    seen = collections.Counter()
    for process in range(process_count):
        batches = list(
            pipeline.eval_dataset(
                config,
                global_batch_size=global_batch,
                process_index=process,
                process_count=process_count,
            ).as_numpy_iterator()
        )
        assert len(batches) == -(-num_eval // global_batch)
        for batch in batches:
            assert batch["image"].shape == (global_batch // process_count, 32, 32, 3)
            keep = batch["mask"]
            seen.update(
                img.tobytes() + bytes([lab])
                for img, lab in zip(batch["image"][keep], batch["label"][keep])
            )
    assert seen == reference


def test_global_iterators_on_a_mesh(digits_dir):
    import cnn_flax.data as data

    config = data_config("digits", digits_dir, augment=dict(pad_crop=True, flip=True))
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    train = data.create_train_iterator(config, global_batch_size=16, seed=0, sharding=sharding)
    batch = next(train)
    assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32
    assert batch["image"].sharding.is_equivalent_to(sharding, 4)
    resumed = data.create_train_iterator(
        config, global_batch_size=16, seed=0, start_step=1, sharding=sharding
    )
    np.testing.assert_array_equal(
        np.asarray(next(train)["image"]), np.asarray(next(resumed)["image"])
    )
    evals = list(data.create_eval_iterator(config, global_batch_size=16, sharding=sharding))
    assert len(evals) == 23 and int(sum(b["mask"].sum() for b in evals)) == 360


def test_batch_not_divisible_by_processes_is_refused(digits_dir):
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        pipeline.TrainStream(
            data_config("digits", digits_dir), global_batch_size=8, seed=0, process_count=3
        )
