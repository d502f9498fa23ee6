"""Exceptions raised by the engine binding, one per C status code, so callers
can tell a bad request (EngineArgumentError) from a bad model file."""
from __future__ import annotations


class EngineError(RuntimeError):
    """A C entry point returned a non-zero status; the message is the engine's."""

    code = -1


class EngineIOError(EngineError):
    code = 1


class ModelFormatError(EngineError):
    """Not a GGUF, truncated or corrupt."""

    code = 2


class UnsupportedModelError(EngineError):
    """An architecture, tensor type or feature the engine refuses."""

    code = 3


class EngineArgumentError(EngineError, ValueError):
    """A bad argument: token id, page id, position, shape."""

    code = 4


class EngineMemoryError(EngineError, MemoryError):
    code = 5


_BY_CODE = {c.code: c for c in (EngineIOError, ModelFormatError, UnsupportedModelError,
                                EngineArgumentError, EngineMemoryError)}


def error_for(code: int, message: str) -> EngineError:
    """The exception for a C status code and its message."""
    return _BY_CODE.get(code, EngineError)(message)
