"""JAX's persistent compilation cache, on by default for the benchmark and the trainer.

Compiling a ResNet-50 train step takes tens of seconds on a GPU and minutes on a small CPU. JAX
can store the compiled executables on disk and reuse them when the same computation (same
shapes, dtypes, flags and jax/jaxlib version) is compiled again, so a second start of the same
configuration skips most of that time.
"""

from __future__ import annotations

import os
import pathlib

import jax

ENV_VAR = "CNN_FLAX_CACHE_DIR"
DEFAULT_DIR = pathlib.Path("~/.cache/cnn_flax/jax")


def default_cache_dir() -> pathlib.Path:
    """``$CNN_FLAX_CACHE_DIR`` if set, else ``~/.cache/cnn_flax/jax``."""
    return pathlib.Path(os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser()


def enable_compilation_cache(cache_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Turns on JAX's persistent compilation cache in ``cache_dir``.

    Every executable is cached, however quickly it compiled (the default skips those under one
    second, which would leave small models and eval steps out). Call this before the first jit
    compilation; calling it again with the same directory is harmless.

    Args:
      cache_dir: the directory; ``None`` uses :func:`default_cache_dir`. The empty string turns
        the cache off and returns ``None``.

    Returns:
      The cache directory in use, or ``None`` when the cache is off.

    Raises:
      ValueError: if the directory cannot be created.
    """
    if cache_dir == "":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"Cannot create the compilation cache directory {str(path)!r} ({err}); pass a "
            f"writable --compilation-cache-dir, set ${ENV_VAR}, or pass '' to turn it off."
        ) from None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
