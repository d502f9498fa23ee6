"""Small helpers shared by the engine tests: run a whole prompt through the
engine on fresh pages and get every position's logits."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radixserve.engine import Model, SeqInput


def pages_for(n_tokens: int, page_size: int) -> int:
    return -(-n_tokens // page_size)


def engine_logits(model: Model, tokens: Sequence[int], *, page_size: int = 16, kv_dtype: str = "f16",
                  chunk: int | None = None) -> np.ndarray:
    """Logits of every position of tokens, prefilled in chunks of `chunk` (all at once by default)."""
    n = pages_for(len(tokens), page_size)
    kv = model.kv_store(n_pages=n, page_size=page_size, dtype=kv_dtype)
    pages = np.arange(n)
    step = chunk or len(tokens)
    rows = []
    for start in range(0, len(tokens), step):
        part = list(tokens[start:start + step])
        rows.append(model.forward(kv, [SeqInput(part, start, pages)], all_logits=True).copy())
    return np.concatenate(rows)


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: the issue's accuracy measure."""
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())
