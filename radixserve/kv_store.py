"""The engine's KV page pool, seen from Python.

The engine stores K/V data in fixed-size pages; which ids are free is decided
by the caller (the scheduler's allocator). Sized by a page count or a byte
budget.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._ffi import call, ffi, lib
from .errors import EngineArgumentError

if TYPE_CHECKING:
    from .engine import Model

DTYPES = {"f16": 0, "f32": 1}


class KVStore:
    """A pool of KV pages for one model (page_size positions x all layers each)."""

    def __init__(self, model: "Model", n_pages: int | None = None, *, page_size: int = 16,
                 dtype: str = "f16", budget_bytes: int | None = None) -> None:
        if dtype not in DTYPES:
            raise EngineArgumentError(f"unknown KV dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        if (n_pages is None) == (budget_bytes is None):
            raise EngineArgumentError("give exactly one of n_pages and budget_bytes")
        if not isinstance(page_size, int) or page_size < 1:
            raise EngineArgumentError(f"page_size must be a positive int, got {page_size!r}")
        page_bytes = int(lib.rs_kv_page_bytes(model._ptr, page_size, DTYPES[dtype]))
        if budget_bytes is not None:
            n_pages = int(budget_bytes) // page_bytes
            if n_pages < 1:
                raise EngineArgumentError(
                    f"a KV budget of {budget_bytes} bytes holds no page of {page_bytes} bytes")
        assert n_pages is not None
        if not isinstance(n_pages, int) or isinstance(n_pages, bool):
            raise EngineArgumentError(f"n_pages must be an int, got {type(n_pages).__name__}")
        out = ffi.new("rs_kv **")
        call(lib.rs_kv_create, model._ptr, n_pages, page_size, DTYPES[dtype], out)
        self._ptr = ffi.gc(out[0], lib.rs_kv_free)
        self._model = model  # the store must not outlive the model's geometry
        self.n_pages = n_pages
        self.page_size = page_size
        self.dtype = dtype
        self.page_bytes = page_bytes

    @property
    def bytes_per_token(self) -> int:
        return self.page_bytes // self.page_size

    def copy_page(self, src: int, dst: int) -> None:
        """Copy page src onto page dst (copy-on-write of a partial last page)."""
        call(lib.rs_kv_copy_page, self._ptr, int(src), int(dst))

    def read_page(self, page: int) -> np.ndarray:
        """A copy of one page's raw bytes."""
        buf = np.empty(self.page_bytes, dtype=np.uint8)
        call(lib.rs_kv_read_page, self._ptr, int(page), ffi.from_buffer(buf, require_writable=True))
        return buf

    def write_page(self, page: int, data: np.ndarray | bytes) -> None:
        """Overwrite one page with raw bytes (snapshot restore)."""
        arr = np.frombuffer(bytes(data), dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
        arr = np.ascontiguousarray(arr, dtype=np.uint8)
        if arr.size != self.page_bytes:
            raise EngineArgumentError(f"a page is {self.page_bytes} bytes, got {arr.size}")
        call(lib.rs_kv_write_page, self._ptr, int(page), ffi.from_buffer(arr))
