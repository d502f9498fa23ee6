#!/usr/bin/env python3
"""Tokenizer benchmark: encode 100 KB of English, decode it, stream it through
the incremental detokenizer, and build the tokenizer from the GGUF.

The text is generated deterministically from varied sentences (seeded), so
every run and every machine tokenizes the same bytes. The peer, llama.cpp's
own tokenizer through llama-cpp-python, is measured in the same run when it is
importable (`vocab_only`, no weights), and must produce the same ids.
Prints a table; --json PATH writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from radixserve.detokenizer import IncrementalDetokenizer  # noqa: E402
from radixserve.engine import Model  # noqa: E402
from radixserve.tokenizer import Tokenizer  # noqa: E402

SUBJECTS = ["The committee", "A small dog", "Our new server", "The river", "Every student", "My neighbour",
            "The old library", "This algorithm", "The weather service", "An unexpected guest"]
VERBS = ["reported", "noticed", "explained", "argued", "discovered", "decided", "promised", "suggested"]
OBJECTS = ["that the results were surprising", "a faster route through the mountains",
           "the importance of careful measurement", "why the bridge had closed in 1987",
           "how 3 of the 12 samples failed", "the difference between cache hits and misses",
           "a recipe for bread with 500 g of flour", "that nobody had read the manual"]
TAILS = [".", "!", "?", ", however, nobody agreed.", " (see chapter 4).", "; it's not the first time.",
         " — or so they said.", ", and then it rained."]


def english_text(n_bytes: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
        s += "\n\n" if rng.random() < 0.15 else " "
        parts.append(s)
        size += len(s.encode())
    return "".join(parts).encode()[:n_bytes].decode("utf-8", "ignore")


def best_ms(n: int, fn: Callable[[], object]) -> float:
    """Best of n runs in milliseconds: the least disturbed by a noisy machine."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def peer_tokenizer(path: str):
    """llama.cpp's tokenizer (llama-cpp-python), or None when it is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    return lambda text: llm.tokenize(text.encode(), add_bos=False, special=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="GGUF path (default: the bundled SmolLM2)")
    ap.add_argument("--kib", type=int, default=100, help="text size in KiB (default 100)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per figure; the best is reported")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = ap.parse_args()

    model = Model(args.model)
    text = english_text(args.kib * 1024)
    n_bytes = len(text.encode())

    t0 = time.perf_counter()
    tok = Tokenizer.from_model(model)
    build_ms = (time.perf_counter() - t0) * 1e3
    ids = tok.encode(text)
    assert tok.decode(ids) == text, "round trip failed"

    encode_ms = best_ms(args.repeat, lambda: tok.encode(text))
    decode_ms = best_ms(args.repeat, lambda: tok.decode(ids))

    def stream() -> None:
        d = IncrementalDetokenizer(tok)
        for i in ids:
            d.push(i)
        d.flush()

    stream_ms = best_ms(max(1, args.repeat // 2), stream)

    peer = peer_tokenizer(str(model.path))
    peer_ms = peer_same = None
    if peer is not None:
        peer_same = list(peer(text)) == ids
        peer_ms = best_ms(args.repeat, lambda: peer(text))

    mb = n_bytes / 1e6
    rows = [
        ("encode", encode_ms, mb / (encode_ms / 1e3)),
        ("decode", decode_ms, mb / (decode_ms / 1e3)),
        ("stream detokenize", stream_ms, mb / (stream_ms / 1e3)),
    ]
    print(f"text: {n_bytes} bytes, {len(ids)} tokens; tokenizer built in {build_ms:.0f} ms")
    print(f"{'workload':<20}{'ms':>10}{'MB/s':>10}")
    for name, ms, rate in rows:
        print(f"{name:<20}{ms:>10.2f}{rate:>10.2f}")
    if peer_ms is not None:
        print(f"{'llama.cpp encode':<20}{peer_ms:>10.2f}{mb / (peer_ms / 1e3):>10.2f}"
              f"   ratio ours/peer {encode_ms / peer_ms:.2f}, same ids: {peer_same}")
    else:
        print("peer: llama-cpp-python not installed; no ratio")

    if args.json:
        result = {
            "model": str(model.path.name), "text_bytes": n_bytes, "tokens": len(ids),
            "build_ms": build_ms, "encode_ms": encode_ms, "encode_mb_s": rows[0][2],
            "decode_ms": decode_ms, "stream_ms": stream_ms,
            "stream_us_per_token": stream_ms * 1e3 / len(ids),
            "peer_encode_ms": peer_ms, "peer_same_ids": peer_same,
            "ratio_encode_vs_peer": encode_ms / peer_ms if peer_ms else None,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
