"""Which model a KV snapshot belongs to: a hash of the GGUF's metadata and tensor directory.

KV pages are only meaningful to the exact weights that computed them. Hashing
a whole 100 MB+ file at every start costs seconds, so the identity is a
BLAKE2b over:

* the file's header bytes: every metadata key/value and the tensor directory
  (names, shapes, types, offsets), i.e. everything up to the tensor data;
* the file size;
* a few evenly spaced 64 KiB samples of the tensor data, so that two
  fine-tunes with the same architecture and metadata still differ.

The header is walked (not decoded): only lengths are read, so the 49k-token
vocabularies of real models take a few milliseconds.
"""
from __future__ import annotations

import functools
import hashlib
import mmap
import os
import struct

_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_SAMPLES, _SAMPLE_BYTES = 16, 64 << 10


class ModelIdentityError(ValueError):
    """The file is not a GGUF this module can walk."""


def model_identity(path: str | os.PathLike[str]) -> str:
    """Hex digest naming the model file's weights (cached per path, size and mtime)."""
    st = os.stat(path)
    return _identity(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _identity(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        end = _header_end(mm)
        h = hashlib.blake2b(digest_size=20)
        h.update(b"gguf-identity-v1")
        h.update(struct.pack("<QQ", size, end))
        h.update(mm[:end])
        span = size - end
        for k in range(_SAMPLES):
            at = end + span * k // _SAMPLES
            h.update(mm[at: min(at + _SAMPLE_BYTES, size)])
        return h.hexdigest()


def _header_end(mm: mmap.mmap) -> int:
    """Offset just past the tensor directory (the tensor data starts at the next alignment)."""
    if mm[:4] != b"GGUF":
        raise ModelIdentityError("not a GGUF file (bad magic)")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
    if version < 2:
        raise ModelIdentityError(f"GGUF version {version} is not supported")
    pos = 24
    try:
        for _ in range(n_kv):
            pos = _skip_string(mm, pos)
            (vtype,) = struct.unpack_from("<I", mm, pos)
            pos = _skip_value(mm, pos + 4, vtype)
        for _ in range(n_tensors):
            pos = _skip_string(mm, pos)
            (n_dims,) = struct.unpack_from("<I", mm, pos)
            pos += 4 + 8 * n_dims + 4 + 8
    except struct.error:
        raise ModelIdentityError("truncated GGUF header") from None
    if pos > len(mm):
        raise ModelIdentityError("truncated GGUF header")
    return pos


def _skip_string(mm: mmap.mmap, pos: int) -> int:
    (n,) = struct.unpack_from("<Q", mm, pos)
    return pos + 8 + n


def _skip_value(mm: mmap.mmap, pos: int, vtype: int) -> int:
    if vtype == _STRING:
        return _skip_string(mm, pos)
    if vtype == _ARRAY:
        etype, n = struct.unpack_from("<IQ", mm, pos)
        pos += 12
        if etype in _SCALAR_SIZE:
            return pos + n * _SCALAR_SIZE[etype]
        for _ in range(n):
            pos = _skip_value(mm, pos, etype)
        return pos
    if vtype not in _SCALAR_SIZE:
        raise ModelIdentityError(f"unknown GGUF value type {vtype}")
    return pos + _SCALAR_SIZE[vtype]
