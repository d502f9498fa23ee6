"""Typed access to a JSON request body: each getter checks one field's type
and names it in the 400 when it is wrong (``bool`` is never an int)."""
from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from .errors import ApiError, bad_request


async def read_json(request: web.Request) -> "Body":
    """The body as a JSON object; 400 for malformed JSON or any other JSON value."""
    raw = await request.read()
    if not raw:
        raise bad_request("the request body is empty; expected a JSON object")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"malformed JSON in the request body: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {_kind(data)}")
    return Body(data)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


class Body:
    """A request body; `null` counts as absent for every optional field."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        return self.data.get(name)

    def _wrong(self, name: str, want: str) -> ApiError:
        return bad_request(f"{name} must be {want}, got {_kind(self.data[name])}", param=name, code="invalid_type")

    def bool(self, name: str, default: bool) -> bool:
        v = self.data.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self._wrong(name, "a boolean")
        return v

    def int(self, name: str, default: int | None, lo: int | None = None, hi: int | None = None) -> int | None:
        v = self.data.get(name)
        if v is None:
            return default
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._wrong(name, "an integer")
        _range(name, v, lo, hi)
        return v

    def number(self, name: str, default: float | None, lo: float | None = None,
               hi: float | None = None) -> float | None:
        v = self.data.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self._wrong(name, "a number")
        _range(name, v, lo, hi)
        return float(v)

    def str(self, name: str, default: str | None) -> str | None:
        v = self.data.get(name)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self._wrong(name, "a string")
        return v

    def obj(self, name: str) -> dict[str, Any] | None:
        v = self.data.get(name)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise self._wrong(name, "an object")
        return v


def _range(name: str, v: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "" if lo is None else f"{lo} <= "
        hi_s = "" if hi is None else f" <= {hi}"
        raise bad_request(f"{name} must satisfy {lo_s}{name}{hi_s}, got {v}", param=name, code="invalid_value")
