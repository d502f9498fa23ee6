"""The one codec: a message object to a frame, a frame body to a message
object. Decoding checks, in order, that the body is msgpack, that it is a map
with a string "type" naming a known message, that no field is unknown, that
every required field is there and every field has its kind. Each failure is a
WireError naming the field, and carrying the request id whenever the map had
a readable one (so the client can tell which request was refused).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from . import framing
from .errors import Code, WireError
from .kinds import Kind, request_id
from .messages import REQUESTS, Message

_Spec = tuple[tuple[str, Kind, bool], ...]   # (name, kind, required)
_SPECS: dict[type[Message], _Spec] = {}


def _spec(cls: type[Message]) -> _Spec:
    spec = _SPECS.get(cls)
    if spec is None:
        spec = tuple((f.name, f.metadata["kind"], f.default is dataclasses.MISSING) for f in dataclasses.fields(cls))
        _SPECS[cls] = spec
    return spec


def to_map(msg: Message) -> dict[str, Any]:
    """The wire map of a message: "type" first, absent (None) fields left out."""
    out: dict[str, Any] = {"type": msg.TYPE}
    for name, _, _ in _spec(type(msg)):
        v = getattr(msg, name)
        if v is not None:
            out[name] = v
    return out


def encode(msg: Message) -> bytes:
    """One frame holding `msg`."""
    return framing.pack(to_map(msg))


def unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise WireError(Code.BAD_MSGPACK, f"the frame is not one msgpack value: {type(e).__name__}: {e}") from None


def decode(body: bytes, registry: dict[str, type[Message]] = REQUESTS, *, strict: bool = True) -> Message:
    """A message of `registry` from one frame body. strict: unknown fields are errors
    (the server's way); clients read answers leniently."""
    return from_map(unpack(body), registry, strict=strict)


def from_map(obj: Any, registry: dict[str, type[Message]] = REQUESTS, *, strict: bool = True) -> Message:
    if not isinstance(obj, dict):
        raise WireError(Code.INVALID_MESSAGE, "a message must be a msgpack map with a string \"type\"")
    rid = _readable_id(obj)
    kind = obj.get("type")
    if kind is None:
        raise WireError(Code.MISSING_FIELD, "type is required", field="type", id=rid)
    if not isinstance(kind, str):
        raise WireError(Code.INVALID_TYPE, "type must be a string", field="type", id=rid)
    cls = registry.get(kind)
    if cls is None:
        raise WireError(Code.UNKNOWN_TYPE, f"unknown message type {kind!r}; known: {', '.join(sorted(registry))}",
                        field="type", id=rid)
    spec = _spec(cls)
    if strict:
        names = {name for name, _, _ in spec}
        for key in obj:
            if key != "type" and key not in names:
                shown = key if isinstance(key, str) else repr(key)
                raise WireError(Code.UNKNOWN_FIELD, f"{kind}: unknown field {shown!r}", field=str(shown), id=rid)
    values: dict[str, Any] = {}
    for name, check, required in spec:
        v = obj.get(name)
        if v is None:
            if required:
                raise WireError(Code.MISSING_FIELD, f"{kind}: {name} is required", field=name, id=rid)
            continue
        try:
            values[name] = check(v, name)
        except WireError as e:
            raise e.with_id(rid) from None
    return cls(**values)


def _readable_id(obj: dict[Any, Any]) -> int | str | None:
    v = obj.get("id")
    if v is None:
        return None
    try:
        return request_id(v, "id")
    except WireError:
        return None
