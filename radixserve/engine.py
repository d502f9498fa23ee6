"""The C engine's Python face: load a model, run batched forwards.

This is the protocol `scheduler/` drives. A forward takes numpy arrays and
writes logits into a numpy array without copies; the C call releases the GIL
(cffi API mode), so the asyncio loop keeps serving while a step runs in a
worker thread.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._ffi import call, ffi, lib
from .errors import EngineArgumentError
from .kv_store import KVStore
from .metadata import Metadata
from .model_path import resolve_model_path


@dataclasses.dataclass(frozen=True, slots=True)
class Hparams:
    """Hyperparameters read from the GGUF (see rs_hparams)."""

    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    rope_dim: int
    rope_freq_base: float
    rms_eps: float
    tied_output: bool
    file_type: int


@dataclasses.dataclass(frozen=True, slots=True)
class SeqInput:
    """One sequence of a batch: new tokens placed at start_pos.., over a page table
    that covers every position up to the last new one. want_logits=False (a
    prefill chunk that is not the prompt's last) skips its output matmul."""

    tokens: Sequence[int] | np.ndarray
    start_pos: int
    pages: Sequence[int] | np.ndarray
    want_logits: bool = True


SEQ_FIELDS = 6  # rs_seq: tok_offset, n_tokens, start_pos, page_offset, n_pages, want_logits


class Model:
    """A memory-mapped GGUF model with the engine's thread pool.

    `Model()` opens the bundled SmolLM2; `threads` defaults to the core count.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, threads: int | None = None) -> None:
        self.path: pathlib.Path = resolve_model_path(path)
        out = ffi.new("rs_model **")
        call(lib.rs_model_open, str(self.path).encode(), out)
        self._ptr = ffi.gc(out[0], lib.rs_model_free)
        hp = ffi.new("rs_hparams *")
        lib.rs_model_hparams(self._ptr, hp)
        self.hparams = Hparams(
            hp.n_vocab, hp.n_ctx_train, hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv,
            hp.head_dim, hp.n_ff, hp.rope_dim, hp.rope_freq_base, hp.rms_eps,
            bool(hp.tied_output), hp.file_type,
        )
        self._metadata: Metadata | None = None
        if threads is not None:
            self.threads = threads

    # hyperparameters as attributes
    def __getattr__(self, name: str) -> Any:
        hparams = self.__dict__.get("hparams")
        if hparams is not None and name in Hparams.__dataclass_fields__:
            return getattr(hparams, name)
        raise AttributeError(name)

    @property
    def metadata(self) -> Metadata:
        """GGUF metadata (tokenizer, chat template...), decoded lazily."""
        if self._metadata is None:
            self._metadata = Metadata(self._ptr)
        return self._metadata

    @property
    def kernels(self) -> str:
        """The live kernel set: 'avx512', 'avx2', 'neon' or 'scalar' (RADIXSERVE_KERNELS overrides)."""
        return ffi.string(lib.rs_model_kernels(self._ptr)).decode()

    @property
    def threads(self) -> int:
        return int(lib.rs_model_threads(self._ptr))

    @threads.setter
    def threads(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool):
            raise EngineArgumentError(f"threads must be an int, got {type(n).__name__}")
        call(lib.rs_model_set_threads, self._ptr, n)

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights one forward step reads."""
        return int(lib.rs_model_weight_bytes(self._ptr))

    def kv_store(self, n_pages: int | None = None, *, page_size: int = 16, dtype: str = "f16",
                 budget_bytes: int | None = None) -> KVStore:
        """A KV page pool for this model (see KVStore)."""
        return KVStore(self, n_pages, page_size=page_size, dtype=dtype, budget_bytes=budget_bytes)

    def forward(self, kv: KVStore, seqs: Sequence[SeqInput], *, all_logits: bool = False,
                out: np.ndarray | None = None) -> np.ndarray:
        """Run one batch. Returns logits: one row per sequence that wants them
        (its last new token), in batch order, or, with all_logits, one row per
        new token in batch order."""
        if not seqs:
            raise EngineArgumentError("empty batch: no sequences")
        toks = [np.asarray(s.tokens, dtype=np.int64).ravel() for s in seqs]
        tabs = [np.asarray(s.pages, dtype=np.int64).ravel() for s in seqs]
        meta = np.zeros((len(seqs), SEQ_FIELDS), dtype=np.int32)
        tok_off = page_off = 0
        for i, (s, t, p) in enumerate(zip(seqs, toks, tabs)):
            meta[i] = (tok_off, len(t), int(s.start_pos), page_off, len(p), int(bool(s.want_logits)))
            tok_off += len(t)
            page_off += len(p)
        tokens = _as_i32(np.concatenate(toks), "token id")
        pages = _as_i32(np.concatenate(tabs) if page_off else np.zeros(0, np.int64), "page id")
        return self.forward_arrays(kv, tokens, meta, pages, all_logits=all_logits, out=out)

    def forward_arrays(self, kv: KVStore, tokens: np.ndarray, seqs: np.ndarray, pages: np.ndarray, *,
                       all_logits: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """The array form the scheduler uses: tokens int32 [T], seqs int32
        [n, 6] rows (tok_offset, n_tokens, start_pos, page_offset, n_pages,
        want_logits), pages int32 [P]; out float32 [rows, n_vocab], C-contiguous."""
        tokens = _contig(tokens, np.int32, "tokens", 1)
        seqs = _contig(seqs, np.int32, "seqs", 2)
        pages = _contig(pages, np.int32, "pages", 1)
        if seqs.shape[1] != SEQ_FIELDS:
            raise EngineArgumentError(f"seqs must have {SEQ_FIELDS} columns, got {seqs.shape[1]}")
        rows = len(tokens) if all_logits else int(np.count_nonzero(seqs[:, 5]))
        if out is None:
            out = np.empty((rows, self.hparams.n_vocab), dtype=np.float32)
        elif (out.dtype != np.float32 or not out.flags.c_contiguous or out.ndim != 2
              or out.shape[0] < rows or out.shape[1] != self.hparams.n_vocab):
            raise EngineArgumentError(
                f"out must be C-contiguous float32 of shape (>={rows}, {self.hparams.n_vocab})")
        call(lib.rs_forward, self._ptr, kv._ptr,
             ffi.from_buffer("int32_t[]", tokens), len(tokens),
             ffi.cast("rs_seq *", ffi.from_buffer(seqs)), len(seqs),
             ffi.from_buffer("int32_t[]", pages), len(pages),
             int(bool(all_logits)), ffi.from_buffer("float[]", out, require_writable=True))
        return out[:rows]


def _as_i32(a: np.ndarray, what: str) -> np.ndarray:
    """int64 ids -> int32, refusing values int32 cannot hold (they would wrap)."""
    if a.size and (a.min() < -(2**31) or a.max() >= 2**31):
        raise EngineArgumentError(f"{what} out of range: {int(a.max() if a.max() >= 2**31 else a.min())}")
    return a.astype(np.int32)


def _contig(a: np.ndarray, dtype: type, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        raise EngineArgumentError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype != dtype:
        if not np.issubdtype(a.dtype, np.integer):
            raise EngineArgumentError(f"{name} must hold integers, got {a.dtype}")
        a = _as_i32(a.astype(np.int64), name)
    return np.ascontiguousarray(a)
