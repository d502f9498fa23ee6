"""What the scheduler needs from an engine, and nothing more.

The scheduler is pure policy: it decides which tokens run in each step and
which KV pages they use; the engine does the arithmetic. radixserve's C
engine binding satisfies this protocol; the scheduler never imports it.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

SEQ_FIELDS = 6  # tok_offset, n_tokens, start_pos, page_offset, n_pages, want_logits


class KVPages(Protocol):
    """The engine's page store: data only; page accounting is the scheduler's."""

    n_pages: int
    page_size: int

    def copy_page(self, src: int, dst: int) -> None: ...


class Engine(Protocol):
    n_vocab: int
    n_ctx_train: int

    def forward_arrays(self, kv: KVPages, tokens: np.ndarray, seqs: np.ndarray, pages: np.ndarray, *,
                       all_logits: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """Run one batch: tokens int32 [T]; seqs int32 [n, SEQ_FIELDS]; pages int32 [P].
        Returns one logits row per sequence whose want_logits is set, in batch order."""
        ...
