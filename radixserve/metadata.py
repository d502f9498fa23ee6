"""GGUF metadata as Python values, read through the engine's own parser.

The `gguf` package needs seconds to parse the bundled model's metadata; the
engine has already parsed it while mapping the file, so this walks its
directory instead (string arrays such as the 49,152 vocabulary tokens come
back as lists of str, numeric arrays as numpy arrays viewing the map).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._ffi import ffi, lib

# GGUF value types
_STRING, _ARRAY, _BOOL = 8, 9, 7
_FLOATS = {6, 12}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}


def _str(model: Any, i: int, j: int) -> str:
    n = ffi.new("size_t *")
    p = lib.rs_meta_str(model, i, j, n)
    return bytes(ffi.buffer(p, n[0])).decode("utf-8", "replace")


def read_value(model: Any, i: int) -> Any:
    """The value of metadata entry i of an open rs_model*."""
    t = lib.rs_meta_type(model, i)
    if t == _STRING:
        return _str(model, i, 0)
    if t == _ARRAY:
        at = lib.rs_meta_array_type(model, i)
        n = lib.rs_meta_array_len(model, i)
        if at == _STRING:
            return [_str(model, i, j) for j in range(n)]
        dtype = np.dtype(_NUMPY[at])
        if n == 0:
            return np.zeros(0, dtype)
        buf = ffi.buffer(lib.rs_meta_array_data(model, i), n * dtype.itemsize)
        return np.frombuffer(buf, dtype=dtype).copy()  # must outlive the map
    if t == _BOOL:
        return bool(lib.rs_meta_int(model, i, 0))
    if t in _FLOATS:
        return float(lib.rs_meta_float(model, i, 0))
    return int(lib.rs_meta_int(model, i, 0))


def read_keys(model: Any) -> list[str]:
    n = ffi.new("size_t *")
    keys = []
    for i in range(lib.rs_meta_count(model)):
        p = lib.rs_meta_key(model, i, n)
        keys.append(bytes(ffi.buffer(p, n[0])).decode("utf-8", "replace"))
    return keys


class Metadata:
    """Read-only mapping of GGUF keys to values, decoded on first access."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._keys = read_keys(model)
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._cache: dict[str, Any] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            self._cache[key] = read_value(self._model, self._index[key])
        return self._cache[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._index else default

    def keys(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._keys)
