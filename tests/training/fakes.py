"""Small stand-ins for the training tests: an in-memory data source with the data API's contract,
and a tiny config.

The fake data set is learnable (the label sets which quadrant of an 8x8 image is bright), so loop
tests can check that the loss falls, and small enough that a step takes milliseconds.
"""

from __future__ import annotations

import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_flax.models import layers

NUM_CLASSES = 4
NUM_TRAIN = 64
NUM_EVAL = 37  # not divisible by the test batch sizes: exercises the eval mask
SIZE = 8


def _examples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
    images = rng.integers(0, 96, size=(n, SIZE, SIZE, 3)).astype(np.uint8)
    half = SIZE // 2
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, r * half : (r + 1) * half, c * half : (c + 1) * half] += 128
    return images, labels


TRAIN = _examples(NUM_TRAIN, 1)
EVAL = _examples(NUM_EVAL, 2)


def _local_rows(global_batch: int) -> slice:
    per_process = global_batch // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def _to_global(local: dict, sharding) -> dict:
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def train_batch(step: int, *, global_batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """The global batch of ``step``: a pure function of (seed, step), reshuffled every epoch."""
    steps_per_epoch = NUM_TRAIN // global_batch_size
    epoch, index = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(NUM_TRAIN)
    rows = order[index * global_batch_size : (index + 1) * global_batch_size]
    return {"image": TRAIN[0][rows], "label": TRAIN[1][rows]}


def stream_batch(first: int, size: int, *, seed: int) -> dict[str, np.ndarray]:
    """Examples ``[first, first + size)`` of the stream that reshuffles every ``NUM_TRAIN``."""
    rows = [
        np.random.default_rng([seed, g // NUM_TRAIN]).permutation(NUM_TRAIN)[g % NUM_TRAIN]
        for g in range(first, first + size)
    ]
    return {"image": TRAIN[0][rows], "label": TRAIN[1][rows]}


class FakeData(types.SimpleNamespace):
    """Implements get_dataset_info / create_train_iterator / create_eval_iterator of the data API.

    Attributes:
      on_step: optional callback run before each train batch is yielded (e.g. to send SIGTERM).
    """

    def __init__(self, on_step=None, ready=0):
        super().__init__(on_step=on_step, ready=ready, eval_batches_yielded=0, start_examples=[])

    @staticmethod
    def get_dataset_info(data_config):
        return (NUM_CLASSES, NUM_TRAIN, NUM_EVAL)

    def create_train_iterator(
        self, data_config, *, global_batch_size, seed, start_step=0, sharding, start_example=None
    ):
        """``ready``: this many batches are put on the devices before the first is yielded (a
        pipeline that keeps up, so that dispatching a step never waits for a transfer).
        ``start_example``: the stream goes on from this example (recorded in start_examples)."""
        self.start_examples.append(start_example)

        def make(step):
            if start_example is None:
                batch = train_batch(step, global_batch_size=global_batch_size, seed=seed)
            else:
                first = start_example + (step - start_step) * global_batch_size
                batch = stream_batch(first, global_batch_size, seed=seed)
            rows = _local_rows(global_batch_size)
            return _to_global({k: v[rows] for k, v in batch.items()}, sharding)

        ready = [make(step) for step in range(start_step, start_step + self.ready)]
        jax.block_until_ready(ready)
        step = start_step
        while True:
            if self.on_step is not None:
                self.on_step(step)
            yield ready[step - start_step] if step - start_step < len(ready) else make(step)
            step += 1

    def create_eval_iterator(self, data_config, *, global_batch_size, sharding):
        images, labels = EVAL
        for b in range(math.ceil(NUM_EVAL / global_batch_size)):
            idx = np.arange(b * global_batch_size, (b + 1) * global_batch_size)
            mask = idx < NUM_EVAL
            idx = np.where(mask, idx, 0)
            rows = _local_rows(global_batch_size)
            local = {"image": images[idx][rows], "label": labels[idx][rows], "mask": mask[rows]}
            self.eval_batches_yielded += 1
            yield _to_global(local, sharding)


TINY_MODEL = "test_tiny_cnn"


class TinyCNN(nn.Module):
    """Two conv-BN-ReLU layers, dropout and a classifier: compiles in a second or two.

    It has the ``norm``/``conv`` fields of the zoo's BN models, so per-device BN can be injected.
    """

    num_classes: int = 4
    width: int = 8
    dropout_rate: float = 0.5
    dtype: jnp.dtype = jnp.float32
    norm: layers.ModuleDef = nn.BatchNorm
    conv: layers.ModuleDef = nn.Conv
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = layers.bind_norm(self.norm, train=train, dtype=self.dtype, momentum=self.bn_momentum)
        conv = layers.bind_conv(self.conv, dtype=self.dtype)
        x = x.astype(self.dtype)
        for i in range(2):
            x = conv(self.width, (3, 3), strides=(2, 2), name=f"conv{i}")(x)
            x = nn.relu(norm(name=f"bn{i}")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


SLOW_MODEL = "test_slow_cnn"


def heavy_work(x: jax.Array, *, size: int, repeats: int) -> jax.Array:
    """A scalar that costs ``repeats`` float32 matmuls of ``size`` squared (no gradient): a step
    whose device time dwarfs its dispatch, as a big model's does. (A host callback would not do:
    it makes dispatch synchronous on CPU.)"""
    m = jnp.resize(jax.lax.stop_gradient(x).astype(jnp.float32).reshape(-1), (size, size))
    m = m / (255.0 * size)
    for _ in range(repeats):
        m = jnp.tanh(m @ m)
    return m.mean()


class SlowCNN(TinyCNN):
    """:class:`TinyCNN` whose training forward pass also runs :func:`heavy_work`."""

    size: int = 512
    repeats: int = 3

    @nn.compact
    def __call__(self, x, *, train: bool):
        if train:
            x = x.astype(jnp.float32) + 0.0 * heavy_work(x, size=self.size, repeats=self.repeats)
        return super().__call__(x, train=train)


def register_tiny_model() -> None:
    """Registers :class:`TinyCNN` (idempotent). Call at test run time, not at collection, so
    other modules' ``parametrize(list_models())`` never see it; see :func:`unregister_tiny_model`.
    """
    from cnn_flax.models import Family, list_models

    if TINY_MODEL not in list_models():
        family = Family("test", reference="test stand-in")
        family.register(TINY_MODEL, TinyCNN, resolution=SIZE)
        family.register(SLOW_MODEL, SlowCNN, resolution=SIZE)


def unregister_tiny_model() -> None:
    from cnn_flax.models import registry

    registry._REGISTRY.pop(TINY_MODEL, None)
    registry._REGISTRY.pop(SLOW_MODEL, None)


def tiny_config(**changes) -> ml_collections.ConfigDict:
    """The quickstart recipe shrunk to milliseconds per step: 8 px, the tiny CNN, fake data."""
    from cnn_flax.configs import get_config

    config = get_config("quickstart")
    config.model = TINY_MODEL
    config.batch_size = 16
    config.total_steps = 6
    config.log_every_steps = 2
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 3
    config.keep_checkpoints = 2
    config.data.image_size = SIZE
    config.data.cache = False
    for key, value in changes.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


def overflowing_batch_norm(params: dict) -> dict:
    """``params`` with the first conv kernel scaled by 1e19: the activations reach ~1e20, so
    ``bn0``'s batch variance overflows float32 to inf while the loss and the gradient norm stay
    finite (the normalised output, and every gradient through it, become 0). This is what a
    diverging learning rate does to a BatchNorm network before the loss notices."""
    conv0 = {**params["conv0"], "kernel": params["conv0"]["kernel"] * 1e19}
    return {**params, "conv0": conv0}


def params_of(state) -> dict:
    return jax.tree.map(np.asarray, jax.device_get(state.params))


def multiprocess_config() -> ml_collections.ConfigDict:
    """The config of the multi-process test (3 steps, one checkpoint at the end)."""
    return tiny_config(total_steps=3, eval_every_steps=3, checkpoint_every_steps=0)
