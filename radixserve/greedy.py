"""Greedy generation on one sequence, straight on the engine.

The scheduler (with sampling, batching and the prefix cache) is where real
generation lives; this is the engine's smallest end-to-end use: prefill the
prompt in one chunk, then decode one token per step into freshly numbered
pages. The CLI's `generate` and the oracle tests use it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .engine import Model, SeqInput
from .kv_store import KVStore


def greedy_generate(model: Model, prompt: Sequence[int], max_tokens: int, *,
                    stop_ids: Sequence[int] = (), kv: KVStore | None = None,
                    chunk: int | None = None) -> list[int]:
    """Greedy continuation of prompt (token ids), up to max_tokens new ids,
    stopping after any id in stop_ids (which is included, as llama.cpp does)."""
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
