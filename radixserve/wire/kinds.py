"""Field kinds: one validator per wire type. Each takes (value, field name)
and returns the value as the server uses it, or raises a WireError naming the
field. msgpack nil counts as absent, so validators never see None.

Token id arrays travel either as a msgpack array of ints or, compactly, as
{"dtype": "<i4" | "<u4" | "<i8" | ..., "data": bin} (lesson 9: arrays as
bytes plus dtype).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import Code, WireError

Kind = Callable[[Any, str], Any]

MAX_ID_CHARS = 128
ID_DTYPES = frozenset({"<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "int16", "uint16", "int32", "uint32",
                       "int64", "uint64"})


def describe(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (bytes, bytearray)):
        return "binary"
    if isinstance(v, (list, tuple)):
        return "an array"
    if isinstance(v, dict):
        return "a map"
    return type(v).__name__


def wrong(name: str, want: str, v: Any) -> WireError:
    return WireError(Code.INVALID_TYPE, f"{name} must be {want}, got {describe(v)}", field=name)


def bad_value(name: str, message: str) -> WireError:
    return WireError(Code.INVALID_VALUE, message, field=name)


def string(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise wrong(name, "a string", v)
    return v


def boolean(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise wrong(name, "a boolean", v)
    return v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def integer(lo: int | None = None, hi: int | None = None) -> Kind:
    def check(v: Any, name: str) -> int:
        if not _is_int(v):
            raise wrong(name, "an integer", v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise bad_value(name, f"{name} must be in [{lo}, {hi}], got {v}")
        return v
    return check


def number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise wrong(name, "a finite number", v)
    return float(v)


def request_id(v: Any, name: str) -> int | str:
    """A client-chosen id: an unsigned 64-bit int or a string of 1..128 characters."""
    if _is_int(v):
        if not 0 <= v < 1 << 64:
            raise bad_value(name, f"{name} must be in [0, 2**64), got {v}")
        return v
    if isinstance(v, str):
        if not 0 < len(v) <= MAX_ID_CHARS:
            raise bad_value(name, f"{name} must have 1..{MAX_ID_CHARS} characters, got {len(v)}")
        return v
    raise wrong(name, "an unsigned integer or a string", v)


def token_ids(v: Any, name: str) -> list[int]:
    """An array of ints, or {"dtype", "data"} little-endian bytes. Range against the vocabulary is checked later."""
    if isinstance(v, dict):
        return _typed_ids(v, name)
    if not isinstance(v, (list, tuple)):
        raise wrong(name, "an array of token ids or a {dtype, data} map", v)
    for i, t in enumerate(v):
        if not _is_int(t):
            raise wrong(f"{name}[{i}]", "an integer token id", t)
    return list(v)


def _typed_ids(v: dict[Any, Any], name: str) -> list[int]:
    extra = set(v) - {"dtype", "data"}
    if extra:
        raise WireError(Code.UNKNOWN_FIELD, f"{name}: unknown key {sorted(map(str, extra))[0]!r}",
                        field=f"{name}.{sorted(map(str, extra))[0]}")
    for key in ("dtype", "data"):
        if key not in v:
            raise WireError(Code.MISSING_FIELD, f"{name}.{key} is required", field=f"{name}.{key}")
    dtype, data = v["dtype"], v["data"]
    if not isinstance(dtype, str) or dtype not in ID_DTYPES:
        raise bad_value(f"{name}.dtype", f"{name}.dtype must be one of {sorted(ID_DTYPES)}, got {dtype!r}")
    if not isinstance(data, (bytes, bytearray)):
        raise wrong(f"{name}.data", "binary", data)
    dt = np.dtype(dtype).newbyteorder("<")
    if len(data) % dt.itemsize:
        raise bad_value(f"{name}.data", f"{name}.data has {len(data)} bytes, not a multiple of {dt.itemsize}")
    return np.frombuffer(data, dtype=dt).astype(np.int64).tolist()


def text_or_ids(v: Any, name: str) -> str | list[int]:
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, dict)):
        return token_ids(v, name)
    raise wrong(name, "a string or an array of token ids", v)


def strings(v: Any, name: str) -> list[str]:
    """One string or an array of strings."""
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)):
        raise wrong(name, "a string or an array of strings", v)
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise wrong(f"{name}[{i}]", "a string", s)
    return list(v)


def chat_messages(v: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(v, (list, tuple)):
        raise wrong(name, "an array of {role, content} maps", v)
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise wrong(f"{name}[{i}]", "a {role, content} map", m)
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                raise wrong(f"{name}[{i}].{key}", "a string", m.get(key))
        out.append({"role": m["role"], "content": m["content"]})
    return out


def token_bias(v: Any, name: str) -> dict[int, float]:
    if not isinstance(v, dict):
        raise wrong(name, "a map of token id to number", v)
    out = {}
    for k, b in v.items():
        if isinstance(k, str) and k.isdigit():
            k = int(k)
        if not _is_int(k):
            raise wrong(name, "a map keyed by integer token ids", k)
        out[k] = number(b, f"{name}[{k}]")
    return out


def any_map(v: Any, name: str) -> dict[Any, Any]:
    if not isinstance(v, dict):
        raise wrong(name, "a map", v)
    return v


def any_value(v: Any, name: str) -> Any:
    return v
