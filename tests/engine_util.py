"""Small helpers shared by the engine tests: run a whole prompt through the
engine on fresh pages and get every position's logits."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radixserve.engine import Model, SeqInput
from radixserve.kv_store import KVStore


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


def greedy_generate(model: Model, prompt: Sequence[int], max_tokens: int, *,
                    stop_ids: Sequence[int] = (), kv: KVStore | None = None,
                    chunk: int | None = None) -> list[int]:
    """Greedy continuation of prompt (token ids), up to max_tokens new ids,
    stopping after any id in stop_ids (which is included, as llama.cpp does).

    The plainest loop on the engine: prefill, then one token per call into
    freshly numbered pages. Tests compare the scheduler and llama.cpp's
    oracle against it."""
    if not prompt:
        raise ValueError("the prompt must hold at least one token")
    total = len(prompt) + max_tokens
    if kv is None:
        kv = model.kv_store(n_pages=-(-total // 16), page_size=16)
    n_pages = -(-total // kv.page_size)
    if n_pages > kv.n_pages:
        raise ValueError(f"{total} positions need {n_pages} pages; the store has {kv.n_pages}")
    pages = np.arange(n_pages, dtype=np.int32)
    step = chunk or len(prompt)
    pos = 0
    logits = None
    while pos < len(prompt):
        part = prompt[pos:pos + step]
        last = pos + len(part) == len(prompt)
        logits = model.forward(kv, [SeqInput(part, pos, pages, want_logits=last)])
        pos += len(part)
    out: list[int] = []
    assert logits is not None
    for _ in range(max_tokens):
        tok = int(np.argmax(logits[0]))
        out.append(tok)
        if tok in stop_ids or len(out) == max_tokens:
            break
        logits = model.forward(kv, [SeqInput([tok], pos, pages)])
        pos += 1
    return out
