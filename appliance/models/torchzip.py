"""Read a torch zip state dict (a pickle plus raw tensor storages) into numpy, without torch.

The pickle is read by an unpickler that builds only dicts, tuples and tensors: any other
global it names is refused, so a hostile file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import CorruptModelError

_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for torch.FloatStorage and its kin: only its numpy dtype matters."""

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_DTYPES[name])


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2: a strided view of a flat storage, copied out."""
    itemsize = storage.dtype.itemsize
    if not size:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(handle)
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(raw, dtype=storage_type.dtype)


def load_state_dict(source: Path | zipfile.ZipFile | Any) -> dict[str, np.ndarray]:
    """name -> array of every tensor in a torch zip checkpoint (a path or an open file)."""
    try:
        with zipfile.ZipFile(source) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise CorruptModelError(f"{source}: not a torch zip checkpoint (no data.pkl)")
            prefix = pickles[0].rsplit("/", 1)[0]
            with archive.open(pickles[0]) as handle:
                state = _Unpickler(handle, archive, prefix).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
        if isinstance(err, CorruptModelError):
            raise
        raise CorruptModelError(f"{source}: unreadable torch checkpoint ({err})") from err
    if not isinstance(state, dict):
        raise CorruptModelError(f"{source}: the checkpoint holds no state dict")
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
