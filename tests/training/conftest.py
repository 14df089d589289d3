"""Fixtures of the training tests: the tiny model is registered only while they run, and
identical step programs (e.g. a run and its resumption) are compiled once."""

import jax
import pytest

from tests.training import fakes


@pytest.fixture(scope="package", autouse=True)
def tiny_model():
    fakes.register_tiny_model()
    yield fakes.TINY_MODEL
    fakes.unregister_tiny_model()


@pytest.fixture(scope="package", autouse=True)
def compilation_cache(tmp_path_factory):
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    previous = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    for name, value in previous.items():
        jax.config.update(name, value)
