"""Train/eval iterators: exact resumption, one global stream whatever the number of processes,
repeated augmentation, eval exactly once.

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


@pytest.mark.parametrize(
    "kind,repeats", [("array", 1), ("files", 1), ("tfds", 1), ("array", 4), ("tfds", 4)]
)
def test_resume_is_bit_identical(kind, repeats, digits_dir, jpeg_folder):
    config, source = _source(kind, digits_dir, jpeg_folder)
    config.repeated_augmentation = repeats
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


def _global_batches(config, source, *, layout, steps, start_step=0, seed=5, global_batch=8):
    """The global batches that the processes of `layout` (one row list per process, None for the
    default block) fill between them."""
    parts = [
        _batches(
            pipeline.TrainStream(
                config,
                global_batch_size=global_batch,
                seed=seed,
                start_step=start_step,
                process_index=process,
                process_count=len(layout),
                rows=rows,
                source=source,
            ),
            steps,
        )
        for process, rows in enumerate(layout)
    ]
    batches = []
    for step in range(steps):
        batch = {}
        for process, rows in enumerate(layout):
            local = parts[process][step]
            rows = np.arange(len(local["label"])) + process * len(local["label"])
            rows = rows if layout[process] is None else np.asarray(layout[process])
            for key, value in local.items():
                batch.setdefault(key, np.zeros((global_batch, *value.shape[1:]), value.dtype))
                batch[key][rows] = value
        batches.append(batch)
    return batches


@pytest.mark.parametrize("kind,repeats", [("array", 1), ("files", 1), ("array", 2)])
def test_global_batches_do_not_depend_on_the_process_count(kind, repeats, digits_dir, jpeg_folder):
    """Issue 12.6: with in-memory and file-list sources, every process takes its rows of one
    global stream, so 2 processes (in either device order) yield exactly the global batches of
    one, augmentations included, across an epoch boundary, and they resume exactly too."""
    config, source = _source(kind, digits_dir, jpeg_folder)
    config.repeated_augmentation = repeats
    one = _global_batches(config, source, layout=[None], steps=7)
    for layout in ([None, None], [[0, 1, 4, 5], [2, 3, 6, 7]]):
        two = _global_batches(config, source, layout=layout, steps=7)
        for a, b in zip(one, two, strict=True):
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["label"], b["label"])
    resumed = _global_batches(config, source, layout=[None, None], steps=3, start_step=4)
    for a, b in zip(one[4:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])


def _split_counter(config, source, split):
    everything = pipeline.eval_dataset(
        data_config(config.name, config.data_dir, eval_split=split),
        global_batch_size=1,
        source=source,
    )
    return collections.Counter(
        img.tobytes() + bytes([lab])
        for batch in everything.as_numpy_iterator()
        for img, lab in zip(batch["image"], batch["label"])
    )


@pytest.mark.parametrize("kind", ["array", "files"])
def test_an_epoch_is_one_permutation_of_the_split(kind, digits_dir, jpeg_folder):
    config, source = _source(kind, digits_dir, jpeg_folder)
    config.augment.update(dict(inception_crop=False, flip=False))
    split = datasets.splits(config, source)[0]
    n = source.split_size(split)
    batches = _global_batches(config, source, layout=[None, None], steps=-(-n // 8) + 1)
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    seen = collections.Counter(i.tobytes() + bytes([y]) for i, y in zip(images[:n], labels[:n]))
    assert seen == _split_counter(config, source, split)
    second = collections.Counter(i.tobytes() for i in images[n : 2 * n])
    assert images[n:].tobytes() != images[: len(images) - n].tobytes()  # epoch 2 reshuffled
    assert len(second) == len(images[n : 2 * n])


def test_streamed_epochs_are_permutations_of_disjoint_process_shards(digits_dir, jpeg_folder):
    """Record-streaming sources cannot seek: each process streams its own shard once per epoch."""
    config, source = _source("tfds", digits_dir, jpeg_folder)
    config.augment.update(dict(inception_crop=False, flip=False))
    split = datasets.splits(config, source)[0]
    n = source.split_size(split)
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
    assert seen == _split_counter(config, source, split)


@pytest.mark.parametrize("kind", ["array", "tfds"])
def test_repeated_augmentation_spreads_differently_augmented_copies(kind, digits_dir, jpeg_folder):
    """Repeats 4, batch 8: rows m, m + 2, m + 4, m + 6 hold one example (on 4 different devices
    of an 8-device mesh), augmented differently; an epoch of n positions holds n / 4 examples."""
    config, source = _source(kind, digits_dir, jpeg_folder)
    config.repeated_augmentation = 4
    n = source.split_size(datasets.splits(config, source)[0])
    kw = dict(global_batch_size=8, seed=1, source=source)
    augmented = _batches(pipeline.TrainStream(config, **kw), 4)
    config.augment.update(dict(inception_crop=False, flip=False))
    plain = _batches(pipeline.TrainStream(config, **kw), -(-n // 8))
    for batch in plain[:4]:
        copies = batch["image"].reshape(4, 2, -1)  # [copy, m, pixels]
        assert (copies == copies[:1]).all()
        assert (batch["label"].reshape(4, 2) == batch["label"][:2]).all()
    for batch in augmented:
        copies = batch["image"].reshape(4, 2, -1)
        assert (batch["label"].reshape(4, 2) == batch["label"][:2]).all()
        assert not (copies == copies[:1]).all(axis=(0, 2)).any()  # no copy set all alike
    first_epoch = np.concatenate([b["image"][:2] for b in plain]).reshape(-1, 32 * 32 * 3)
    distinct = {image.tobytes() for image in first_epoch[: -(-n // 4)]}
    assert len(distinct) == -(-n // 4)


def test_repeats_must_divide_the_batch(digits_dir):
    config = data_config("digits", digits_dir, repeated_augmentation=3)
    with pytest.raises(ValueError, match="not divisible by data.repeated_augmentation=3"):
        pipeline.TrainStream(config, global_batch_size=8, seed=0)


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
    del train, resumed  # their tf.data threads stop before the evaluation pass starts
    # Counted on the host: the global arrays' contents are what is checked, not an XLA reduction
    # (one run of the whole suite aborted inside an 8-device jnp.sum here while three tf.data
    # iterators were alive; not reproduced alone).
    masks = [np.asarray(b["mask"]) for b in data.create_eval_iterator(
        config, global_batch_size=16, sharding=sharding
    )]  # fmt: skip
    assert len(masks) == 23 and int(sum(m.sum() for m in masks)) == 360


def test_batch_not_divisible_by_processes_is_refused(digits_dir):
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        pipeline.TrainStream(
            data_config("digits", digits_dir), global_batch_size=8, seed=0, process_count=3
        )
