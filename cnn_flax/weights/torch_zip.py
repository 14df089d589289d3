"""``torch.save`` files read with numpy: no torch needed.

Since PyTorch 1.6 ``torch.save`` writes a zip archive: ``<name>/data.pkl`` pickles the object with
each tensor's storage replaced by a *persistent id* ``("storage", <torch.FloatStorage>, key,
location, numel)``, and ``<name>/data/<key>`` holds that storage's raw little-endian bytes. A
tensor is rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``.

Unpickling runs whatever callables a pickle names, so the reader here, like torch's
``weights_only=True`` loader, resolves only the globals a state dict needs (the tensor and
parameter rebuilders, ``collections.OrderedDict``, the typed storage classes) and refuses any
other global by name before anything is called. The legacy (pre-1.6, non-zip) format is refused.
"""

from __future__ import annotations

import collections
import pathlib
import pickle
import zipfile
from typing import Any

import numpy as np

from cnn_flax.errors import one_line
from cnn_flax.weights.convert import WeightsError

# torch's typed storages -> numpy dtype; bfloat16 (no numpy type) is read as its uint16 bits.
_STORAGES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. inside the pickle."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGES[name])


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    del requires_grad, hooks, metadata
    array, name = storage
    itemsize = array.dtype.itemsize
    if not size:
        out = array[offset : offset + 1].reshape(())
    else:
        view = np.lib.stride_tricks.as_strided(
            array[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
        )
        out = np.array(view)  # a copy: contiguous, and no longer tied to the shared storage
    return (out.astype(np.uint32) << 16).view(np.float32) if name == "BFloat16Storage" else out


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    del requires_grad, hooks, state
    return data


_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: pathlib.Path):
        super().__init__(file)
        self._archive, self._prefix, self._path = archive, prefix, path
        self._storages: dict[str, tuple[np.ndarray, str]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins"}.get(module, module)  # protocol-2 pickles' name
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        raise WeightsError(
            f"{self._path} is not a plain state dict: it pickles a {module}.{name} object (a "
            "whole model?), which the weights reader refuses, as torch.load(weights_only=True) "
            "does. Save `model.state_dict()` with torch.save and convert that file."
        )

    def persistent_load(self, pid: Any) -> tuple[np.ndarray, str]:
        if not (isinstance(pid, tuple) and pid[0] == "storage" and len(pid) == 5):
            raise WeightsError(f"{self._path}: unknown persistent id {str(pid)[:60]} in data.pkl.")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise WeightsError(f"{self._path}: storage of unknown type {storage_type!r}.")
        if key not in self._storages:
            data = self._archive.read(f"{self._prefix}data/{key}")
            array = np.frombuffer(data, dtype=storage_type.dtype.newbyteorder("<"), count=numel)
            self._storages[key] = (array, storage_type.name)
        return self._storages[key]


def read(path: str | pathlib.Path) -> Any:
    """The object a ``torch.save`` zip file holds, tensors as numpy arrays (bfloat16 as
    float32; every other dtype as saved).

    Raises:
      WeightsError: not a zip (the legacy format, or not a torch file), a big-endian file, or a
        pickle that names any global besides the tensor rebuilders (named in the message).
    """
    path = pathlib.Path(path)
    if not zipfile.is_zipfile(path):
        raise WeightsError(
            f"{path} is not a torch.save zip file (the legacy format of torch < 1.6, or not a "
            "torch file at all); re-save it with a recent torch, or as .safetensors."
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise WeightsError(f"{path} is a zip file but not one written by torch.save.")
        prefix = pickles[0][: -len("data.pkl")]
        order = f"{prefix}byteorder"
        if order in archive.namelist() and archive.read(order).strip() != b"little":
            raise WeightsError(f"{path} was saved big-endian; re-save it on a little-endian host.")
        with archive.open(pickles[0]) as file:
            try:
                return _Unpickler(file, archive, prefix, path).load()
            except WeightsError:
                raise
            except Exception as err:  # truncated or corrupt pickles raise many types
                raise WeightsError(
                    f"cannot read {path} ({type(err).__name__}: {one_line(err)[:160]})"
                    "; is it a file written by torch.save?"
                ) from None
