"""Protocol errors: a code from a fixed list, a message naming the problem,
the bad field (when one is to blame) and the request id (when the message
got far enough to have one). Every error the server sends is a WireError."""
from __future__ import annotations

import enum
from typing import Any


class Code(str, enum.Enum):
    FRAME_TOO_LARGE = "frame_too_large"          # connection-level; the frame's body was skipped
    BAD_MSGPACK = "bad_msgpack"                  # the frame is not one msgpack value
    INVALID_MESSAGE = "invalid_message"          # the value is not a map with a string "type"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    INVALID_VALUE = "invalid_value"
    INVALID_TOKEN = "invalid_token"              # a token id outside the vocabulary
    DUPLICATE_ID = "duplicate_id"                # the id of a request still in flight
    UNSUPPORTED_VERSION = "unsupported_version"
    UNAUTHORIZED = "unauthorized"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    QUEUE_FULL = "queue_full"
    MODEL_LOADING = "model_loading"
    SHUTTING_DOWN = "shutting_down"
    ENGINE_ERROR = "engine_error"
    INTERNAL_ERROR = "internal_error"


class WireError(Exception):
    """One refusal. `id` is the request's id (None: the connection's)."""

    def __init__(self, code: Code, message: str, *, field: str | None = None, id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.id = id

    def with_id(self, id: Any) -> "WireError":
        if self.id is None:
            self.id = id
        return self
