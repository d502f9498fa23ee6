"""The peer for benchmarks: llama.cpp through llama-cpp-python's low-level API.

Same work as radixserve's side: prefill, single-stream decode, and batched
decode of several streams over one shared prompt (the prompt is prefilled on
sequence 0 and its KV copied to the others with llama_memory_seq_cp, as
llama-batched-bench does with a shared prompt). f16 KV, the same threads.

The peer gets its best: every workload runs in each of CONFIGS and the
benchmark keeps the fastest. llama.cpp's defaults (flash attention "auto",
which is on for the CPU, and one KV stream per sequence, into which
seq_cp copies the prompt) are its best for prefill and one or two streams.
Over a shared prompt with 4 or more streams, a unified KV (the prompt's
cells shared by every sequence, as radixserve shares pages) with flash
attention off measured ~25 % faster here (x8 @1,024: ~185 against ~145
tok/s on a Zen 4 VM), and flash attention off also helps one stream over
4,096 positions in some runs.
"""
from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence

import numpy as np


# name -> llama_context_params fields set over llama.cpp's defaults
CONFIGS: dict[str, dict[str, int | bool]] = {
    "default": {},
    "unified-kv, no flash-attn": {"kv_unified": True, "flash_attn_type": 0},
}


class LlamaCppPeer:
    def __init__(self, path: str) -> None:
        import llama_cpp as L  # ImportError when the peer is not installed

        self.L = L
        # llama.cpp logs every context it makes to stderr: keep the benchmark's table readable
        self._quiet = L.llama_log_callback(lambda level, text, user: None)
        L.llama_log_set(self._quiet, ctypes.c_void_p(0))
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp cannot load {path}")
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))

    def _context(self, n_ctx: int, streams: int, threads: int, config: str):  # type: ignore[no-untyped-def]
        L = self.L
        cp = L.llama_context_default_params()
        known = {name for name, _ in type(cp)._fields_}
        for field, value in CONFIGS[config].items():
            if field not in known:  # ctypes would take any name silently, and measure the defaults twice
                raise RuntimeError(f"this llama-cpp-python has no context parameter {field!r} (config {config!r})")
            setattr(cp, field, value)
        cp.n_ctx = n_ctx
        cp.n_batch = 512
        cp.n_ubatch = 512
        cp.n_seq_max = streams
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.no_perf = True
        ctx = L.llama_init_from_model(self.model, cp)
        if not ctx:
            raise RuntimeError("llama.cpp cannot create a context")
        return ctx

    def _decode(self, ctx, items: Sequence[tuple[int, int, int, bool]]) -> None:  # type: ignore[no-untyped-def]
        """items: (token, pos, seq, want_logits), at most 512 per call."""
        L = self.L
        batch = L.llama_batch_init(len(items), 0, 1)
        try:
            for i, (tok, pos, seq, out) in enumerate(items):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = out
            batch.n_tokens = len(items)
            rc = L.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed: {rc}")
        finally:
            L.llama_batch_free(batch)

    def _prefill(self, ctx, tokens: Sequence[int], seq: int = 0) -> None:  # type: ignore[no-untyped-def]
        for a in range(0, len(tokens), 512):
            part = tokens[a:a + 512]
            self._decode(ctx, [(t, a + i, seq, a + i == len(tokens) - 1) for i, t in enumerate(part)])

    def _argmax(self, ctx, i: int) -> int:  # type: ignore[no-untyped-def]
        ptr = self.L.llama_get_logits_ith(ctx, i)
        row = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        return int(row.argmax())

    def prefill(self, tokens: Sequence[int], threads: int, config: str = "default") -> float:
        ctx = self._context(len(tokens) + 16, 1, threads, config)
        try:
            t0 = time.perf_counter()
            self._prefill(ctx, tokens)
            return len(tokens) / (time.perf_counter() - t0)
        finally:
            self.L.llama_free(ctx)

    def batched_decode(self, prompt: Sequence[int], streams: int, n: int, threads: int,
                       config: str = "default") -> float:
        """Aggregate tok/s of `streams` sequences decoding n tokens each after a shared prompt."""
        L = self.L
        ctx = self._context((len(prompt) + n) * streams + 64, streams, threads, config)
        try:
            self._prefill(ctx, prompt)
            mem = L.llama_get_memory(ctx)
            for s in range(1, streams):
                L.llama_memory_seq_cp(mem, 0, s, -1, -1)
            toks = [100 + s for s in range(streams)]
            t0 = time.perf_counter()
            for i in range(n):
                self._decode(ctx, [(toks[s], len(prompt) + i, s, True) for s in range(streams)])
                toks = [self._argmax(ctx, s) for s in range(streams)]
            return streams * n / (time.perf_counter() - t0)
        finally:
            L.llama_free(ctx)
