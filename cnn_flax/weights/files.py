"""Weight files as tensors: PyTorch's ``torch.save`` files and safetensors.

* safetensors files are read with the ``safetensors`` package into numpy, so they need no torch.
* ``torch.save`` files are read with numpy too (:mod:`cnn_flax.weights.torch_zip`), through an
  unpickler that, like ``torch.load(weights_only=True)``, resolves only the tensor rebuilders and
  refuses a pickled whole model.

Which of the two a file is comes from its bytes, not its name: a safetensors file starts with the
little-endian length of its JSON header and then ``{``.
"""

from __future__ import annotations

import hashlib
import pathlib
import zipfile
from collections.abc import Mapping

import numpy as np

from cnn_flax.errors import one_line
from cnn_flax.weights import torch_zip
from cnn_flax.weights.convert import WeightsError

CONTAINERS = ("safetensors", "torch")


def sha256(path: pathlib.Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def container_of(path: pathlib.Path) -> str:
    """``"safetensors"`` or ``"torch"``, from the file's first bytes."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len < path.stat().st_size:
            return "safetensors"
    return "torch"


def read_tensors(path: str | pathlib.Path) -> tuple[dict[str, np.ndarray], str]:
    """The tensors of a weights file as numpy arrays, and the file's container.

    Raises:
      WeightsError: naming the path when it is missing, unreadable, or holds something other
        than a flat mapping of names to tensors.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist or is not a file.")
    container = container_of(path)
    if container == "safetensors":
        return _read_safetensors(path), container
    return _read_torch(path), container


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise WeightsError(
            f"reading {path} needs the safetensors package: `pip install safetensors`."
        ) from None
    try:
        return dict(load_file(str(path)))
    except Exception as err:  # safetensors raises SafetensorError, TypeError for bf16, ...
        raise WeightsError(
            f"cannot read {path} as safetensors ({type(err).__name__}: {one_line(err)[:200]}); "
            "numpy has no bfloat16, so such files must be converted to float32 first."
        ) from None


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    obj = torch_zip.read(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        what = f"a dict with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, Mapping) else ""
        raise WeightsError(
            f"{path} holds {what or type(obj).__name__}, not a state dict of tensors. If the "
            "weights sit under one key (e.g. 'state_dict' or 'model'), save that entry alone."
        )
    # numpy has no bfloat16 (read as float32); float16 widens too, as the variables are float32.
    return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in obj.items()}


def _read_legacy(path: pathlib.Path) -> dict:
    """torch's pre-1.6 format (the Lite packages ship it): only torch reads it, with
    ``weights_only=True``; without torch, one line says so."""
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"cannot read {path} without torch: it is not a torch.save zip file (the legacy "
            "format of torch < 1.6, or no torch file); `pip install torch`, or re-save it."
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise WeightsError(
            f"cannot read {path} with torch.load ({type(err).__name__}: "
            f"{one_line(err)[:160]}); is it a file written by torch.save?"
        ) from None
    if not isinstance(obj, Mapping):
        return obj
    widen = (torch.bfloat16, torch.float16)
    return {
        k: (v.float() if v.dtype in widen else v).cpu().numpy() if torch.is_tensor(v) else v
        for k, v in obj.items()
    }
