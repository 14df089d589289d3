"""The persistent compilation cache: configured from the argument or the environment, and used."""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from cnn_flax.perf import compile_cache

_KEYS = (
    "jax_enable_compilation_cache",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture
def restore_jax_config():
    saved = {k: getattr(jax.config, k) for k in _KEYS}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


def test_dir_from_argument_env_and_default(tmp_path, monkeypatch, restore_jax_config):
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "env"))
    assert compile_cache.default_cache_dir() == tmp_path / "env"
    assert compile_cache.enable_compilation_cache() == tmp_path / "env"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "env")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    assert compile_cache.enable_compilation_cache(tmp_path / "arg") == tmp_path / "arg"
    assert (tmp_path / "arg").is_dir()
    monkeypatch.delenv(compile_cache.ENV_VAR)
    assert compile_cache.default_cache_dir() == pathlib.Path.home() / ".cache/cnn_flax/jax"


def test_empty_string_turns_the_cache_off(restore_jax_config):
    assert compile_cache.enable_compilation_cache("") is None
    assert not jax.config.jax_enable_compilation_cache


def test_compiled_executables_land_in_the_cache(tmp_path):
    # A fresh process, because JAX decides once per process whether the cache is in use.
    code = (
        "import sys, jax, jax.numpy as jnp\n"
        "from cnn_flax.perf.compile_cache import enable_compilation_cache\n"
        "enable_compilation_cache(sys.argv[1])\n"
        "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    root = pathlib.Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, cwd=root)
    assert any(p.is_file() for p in tmp_path.rglob("*")), "no cache entry was written"
