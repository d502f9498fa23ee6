"""The msgpack socket protocol (docs/protocol.md): framing, typed messages
and their codec (light: clients import them), and the asyncio server that
runs beside the HTTP API (radixserve.wire.server, imported on its own)."""
from .errors import Code, WireError
from .framing import MAX_FRAME_BYTES
from .messages import PROTOCOL_VERSION

__all__ = ["MAX_FRAME_BYTES", "PROTOCOL_VERSION", "Code", "WireError"]
