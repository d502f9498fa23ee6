"""The compiled engine's ffi/lib pair and the status-checking call helper."""
from __future__ import annotations

from typing import Any, Callable

from radixserve._engine import ffi, lib  # type: ignore[import-not-found]

from .errors import error_for

ERR_LEN = 512


def call(fn: Callable[..., int], *args: Any) -> None:
    """Call a C entry point whose last two arguments are (err, err_len); raise on failure."""
    err = ffi.new("char[]", ERR_LEN)
    rc = fn(*args, err, ERR_LEN)
    if rc != 0:
        raise error_for(rc, ffi.string(err).decode("utf-8", "replace"))


__all__ = ["ffi", "lib", "call", "ERR_LEN"]
