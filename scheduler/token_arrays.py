"""Validation of token and page arguments at the cache's boundary.

Everything inside the tree is a 1-D ``np.int32`` array; this module is the one
place that turns caller input (lists, tuples, numpy arrays of any int dtype)
into that form or raises an error naming the argument. An ``np.int32`` array is
passed through without a copy, so the hot path (match on a long prompt) pays
for one ``min`` only.
"""
from __future__ import annotations

from typing import Union

import numpy as np

from .errors import CacheInputError, CacheTypeError

Namespace = Union[str, int, None]

_INT32_MAX = np.iinfo(np.int32).max


def as_id_array(values: object, what: str) -> np.ndarray:
    """``values`` as a 1-D int32 array of non-negative ids (no copy when already one)."""
    if isinstance(values, np.ndarray):
        arr = values
    elif isinstance(values, (list, tuple, range)):
        if len(values) == 0:
            return np.empty(0, dtype=np.int32)
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError) as exc:
            raise CacheTypeError(f"{what} must be a flat sequence of ints: {exc}") from None
    else:
        raise CacheTypeError(
            f"{what} must be a list, tuple or 1-D numpy array of ints, got {type(values).__name__}"
        )
    if arr.ndim != 1:
        raise CacheTypeError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise CacheTypeError(f"{what} must hold integers, got dtype {arr.dtype}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int32)
    if arr.dtype != np.int32:
        hi = int(arr.max())
        if hi > _INT32_MAX:
            raise CacheInputError(f"{what} holds {hi}, beyond int32")
    if arr.dtype.kind == "i":
        lo = int(arr.min())
        if lo < 0:
            at = int(np.argmin(arr))
            raise CacheInputError(f"{what}[{at}] = {lo} is negative; ids are >= 0")
    return arr.astype(np.int32, copy=False)


def check_namespace(namespace: object) -> Namespace:
    """A namespace is None (the default), a str or an int (not a bool)."""
    if namespace is None or isinstance(namespace, str):
        return namespace
    if isinstance(namespace, int) and not isinstance(namespace, bool):
        return namespace
    raise CacheTypeError(
        f"namespace must be None, a str or an int, got {type(namespace).__name__}"
    )


def check_count(n: object, what: str) -> int:
    """A non-negative Python or numpy int (not a bool)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise CacheTypeError(f"{what} must be an int, got {type(n).__name__}")
    if n < 0:
        raise CacheInputError(f"{what} must be >= 0, got {n}")
    return int(n)


def frozen_copy(arr: np.ndarray) -> np.ndarray:
    """A private read-only copy: the tree must not see later writes to a caller's buffer."""
    out = np.array(arr, dtype=np.int32, copy=True)
    out.flags.writeable = False
    return out
