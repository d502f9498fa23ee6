"""Framing: every message is one frame, a 4-byte big-endian unsigned length
followed by that many bytes holding exactly one msgpack map.

    +----------------+----------------------------------+
    | length (u32 BE)| msgpack map, `length` bytes      |
    +----------------+----------------------------------+

A frame longer than the reader's limit is not buffered: its body is read and
dropped as it arrives and the reader reports it once, so the stream stays in
step and the connection stays usable. FrameDecoder is sans-IO (bytes in,
events out) so the asyncio server and both clients share it.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
HEADER_BYTES = HEADER.size
MAX_FRAME_BYTES = 8 << 20   # the server's default limit on one frame's body (8 MiB)
MAX_REPLY_BYTES = 64 << 20  # what clients accept from a server


@dataclasses.dataclass(frozen=True, slots=True)
class Oversized:
    """A frame whose declared length exceeded the limit; its body was skipped."""

    length: int


def pack(obj: dict[str, Any]) -> bytes:
    """One frame: the header and the msgpack body of `obj`."""
    body = msgpack.packb(obj, use_bin_type=True)
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Feed bytes as they arrive; iterate complete frame bodies (bytes) and Oversized events."""

    __slots__ = ("max_bytes", "_buf", "_skip")

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        if max_bytes < 1 or max_bytes >= 1 << 32:
            raise ValueError(f"max_bytes must be in [1, 2**32), got {max_bytes}")
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._skip = 0  # bytes of an oversized body still to drop

    @property
    def mid_frame(self) -> bool:
        """True when the stream ended now would cut a frame (framing lost)."""
        return bool(self._buf) or self._skip > 0

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        """Every frame that `data` completes, in order."""
        out: list[bytes | Oversized] = []
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        self._buf += data
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER_BYTES:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > self.max_bytes:
                pos += HEADER_BYTES
                n = min(length, len(buf) - pos)
                pos += n
                self._skip = length - n
                out.append(Oversized(length))
                continue
            end = pos + HEADER_BYTES + length
            if end > len(buf):
                break
            out.append(bytes(buf[pos + HEADER_BYTES:end]))
            pos = end
        del buf[:pos]
        return out
