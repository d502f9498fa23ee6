"""Benchmark the radix prefix cache on long prompts.

Builds a tree of 100,000 pages across 5,000 branches (page size 16, every
sequence 8,192 tokens = 512 pages; each new sequence forks off an earlier one
near its end, so a query's path crosses many nodes), then times:

* match of an 8,192-token sequence that is fully cached (the common hit),
* match of one that diverges in its last pages (a split, then a partial hit),
* insert of a new 8,192-token sequence sharing all but its last ~20 pages,
* eviction of 10,000 pages (LRU leaves, reported per page).

The peer, measured in the same run, is a vLLM-style hashed prefix lookup: one
chained hash and one dict probe per page. The target is a match well under
200 us, so the cache never shows next to a forward pass.

    python scripts/bench_radix.py [--json PATH] [--branches N] [--seed S]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scheduler import PageAllocator, RadixCache  # noqa: E402

PAGE = 16
SEQ_TOKENS = 8192
SEQ_PAGES = SEQ_TOKENS // PAGE
KEPT = 400  # sequences kept in memory as fork sources and queries (the rest are only in the tree)


def build(n_branches: int, total_pages: int, rng: np.random.Generator):
    """Insert ``n_branches`` sequences totalling ``total_pages`` pages; return the cache,
    allocator, the kept sequences, and the peer's page-hash table."""
    cache = RadixCache(page_size=PAGE)
    alloc = PageAllocator(total_pages + 20_000, cache)
    kept = [rng.integers(0, 49_152, SEQ_TOKENS, dtype=np.int32)]
    cache.insert(kept[0], alloc.allocate(SEQ_PAGES))
    # pages each later branch adds: at least 1, summing exactly to the page total
    sizes = 1 + rng.multinomial(total_pages - SEQ_PAGES - (n_branches - 1),
                                np.full(n_branches - 1, 1 / (n_branches - 1)))
    for n_new in sizes.tolist():
        base = kept[int(rng.integers(len(kept)))]
        seq = base.copy()
        seq[(SEQ_PAGES - n_new) * PAGE:] = rng.integers(0, 49_152, n_new * PAGE, dtype=np.int32)
        dups = cache.insert(seq, alloc.allocate(SEQ_PAGES))
        alloc.free(dups)
        if len(kept) < KEPT:
            kept.append(seq)
    return cache, alloc, kept


def page_hashes(seq: np.ndarray) -> list[int]:
    """vLLM-style chained block hashes: hash(parent hash, this page's tokens)."""
    out, h = [], 0
    for i in range(SEQ_PAGES):
        h = hash((h, seq[i * PAGE:(i + 1) * PAGE].tobytes()))
        out.append(h)
    return out


def timed_us(fn, args_list) -> list[float]:
    out = []
    for args in args_list:
        t0 = time.perf_counter_ns()
        fn(*args)
        out.append((time.perf_counter_ns() - t0) / 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write match_us, insert_us, evict_us_per_page here")
    ap.add_argument("--branches", type=int, default=5000)
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--evict", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    cache, alloc, kept = build(args.branches, args.pages, rng)
    build_s = time.perf_counter() - t0
    s = cache.stats()
    queries = [kept[int(i)] for i in rng.integers(len(kept), size=2000)]

    match_hit = timed_us(cache.match, [(q,) for q in queries])
    assert all(cache.match(q).n_tokens == SEQ_TOKENS for q in queries[:20])
    path_nodes = statistics.mean(len(cache.match(q).node.path_to_root()) for q in queries[:200])
    misses = []
    for q in queries[:500]:
        m = q.copy()
        m[-5 * PAGE + 3] += 1  # diverge inside the 5th page from the end
        misses.append((m,))
    match_miss = timed_us(cache.match, misses)

    table = {}
    for seq in kept:
        for depth, h in enumerate(page_hashes(seq), 1):
            table[h] = depth
    def peer_match(q: np.ndarray) -> int:
        h, n = 0, 0
        for i in range(SEQ_PAGES):
            h = hash((h, q[i * PAGE:(i + 1) * PAGE].tobytes()))
            if h not in table:
                break
            n += 1
        return n
    peer = timed_us(peer_match, [(q,) for q in queries[:500]])

    insert = []
    for _ in range(500):
        seq = kept[int(rng.integers(len(kept)))].copy()
        seq[(SEQ_PAGES - 20) * PAGE:] = rng.integers(0, 49_152, 20 * PAGE, dtype=np.int32)
        pages = alloc.allocate(SEQ_PAGES)
        t0 = time.perf_counter_ns()
        dups = cache.insert(seq, pages)
        insert.append((time.perf_counter_ns() - t0) / 1e3)
        alloc.free(dups)

    t0 = time.perf_counter_ns()
    freed = cache.evict(args.evict)
    evict_us = (time.perf_counter_ns() - t0) / 1e3
    assert freed.size == args.evict
    cache.check_invariants()

    med = statistics.median
    rows = [
        ("match, 8192-token full hit", med(match_hit), f"p99 {np.percentile(match_hit, 99):.1f}"),
        ("match, diverges 5 pages from the end", med(match_miss), ""),
        ("peer: chained page hashes + dict", med(peer), f"{med(peer) / med(match_hit):.1f}x slower"),
        ("insert, 8192 tokens (20 new pages)", med(insert), ""),
        (f"evict {args.evict} pages (per page)", evict_us / args.evict, f"total {evict_us / 1e3:.1f} ms"),
    ]
    print(f"tree: {s.in_tree_pages} pages, {s.nodes} nodes, {args.branches} branches, "
          f"page {PAGE}; built in {build_s:.1f} s")
    print(f"a query's path crosses {path_nodes:.1f} nodes on average")
    print(f"{'operation':<40} {'median us':>10}  note")
    for name, us, note in rows:
        print(f"{name:<40} {us:>10.2f}  {note}")
    if args.json:
        args.json.write_text(json.dumps({
            "match_us": med(match_hit), "match_miss_us": med(match_miss),
            "peer_hash_match_us": med(peer), "insert_us": med(insert),
            "evict_us_per_page": evict_us / args.evict,
            "path_nodes": path_nodes, "tree_pages": s.in_tree_pages, "tree_nodes": s.nodes,
            "branches": args.branches,
            "page_size": PAGE, "seq_tokens": SEQ_TOKENS}, indent=2) + "\n")


if __name__ == "__main__":
    main()
