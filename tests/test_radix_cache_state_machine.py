"""The radix cache against a deliberately naive model, under any sequence of operations.

The model stores every cached page as one dict entry keyed by its *whole*
prefix ``(namespace, tokens[:end of page])`` with its page id and last access
time. Longest match is "the largest k whose k-page prefix is a key"; eviction
is "remove the oldest unprotected page that no other page extends", one page at
a time. Nothing in it resembles a tree, so agreeing with it is evidence.

After every step the machine checks: the cache's own recount
(``check_invariants``), page conservation (free + tree + held by callers =
total, each page in exactly one place), the whole tree equal to the model page
by page (ids and access times), and the statistics equal to the model's counts.
Each rule also checks its own result: match pages, insert duplicates, the exact
pages and order of an eviction, OutOfPages changing nothing.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from scheduler import NotCachedError, OutOfPages, PageAllocator, RadixCache

NAMESPACES = (None, "tenant-b", 7)
MAX_TOKENS = 24
Key = tuple  # (namespace, tuple of tokens up to the end of one page)


@dataclass
class NaiveCache:
    """Page-by-page model: no nodes, no splits, no heap."""

    ps: int
    entries: dict[Key, list[int]] = field(default_factory=dict)  # key -> [page, last_access]
    clock: int = 0
    locks: dict[int, Key] = field(default_factory=dict)  # handle uid -> matched prefix key
    pins: Counter = field(default_factory=Counter)  # prefix key -> count
    query_tokens: int = 0
    hit_tokens: int = 0
    evicted: int = 0
    dedup: int = 0

    def keys_of(self, ns, toks) -> list[Key]:
        return [(ns, tuple(toks[: (i + 1) * self.ps])) for i in range(len(toks) // self.ps)]

    def longest(self, ns, toks) -> int:
        k = 0
        for key in self.keys_of(ns, toks):
            if key not in self.entries:
                break
            k += 1
        return k

    def touch(self, keys) -> None:
        for key in keys:
            self.entries[key][1] = self.clock

    def match(self, ns, toks) -> list[int]:
        self.clock += 1
        keys = self.keys_of(ns, toks)[: self.longest(ns, toks)]
        self.touch(keys)
        self.query_tokens += len(toks)
        self.hit_tokens += len(keys) * self.ps
        return [self.entries[k][0] for k in keys]

    def insert(self, ns, toks, pages) -> list[int]:
        self.clock += 1
        dups = []
        for key, page in zip(self.keys_of(ns, toks), pages):
            if key in self.entries:
                if self.entries[key][0] != page:
                    dups.append(page)
                self.entries[key][1] = self.clock
            else:
                self.entries[key] = [page, self.clock]
        self.dedup += len(dups)
        return dups

    def pin(self, ns, toks) -> None:
        self.clock += 1
        keys = self.keys_of(ns, toks)
        self.touch(keys)
        self.pins[keys[-1]] += 1

    def covered(self, prefix_keys) -> set[Key]:
        out = set()
        for ns, toks in prefix_keys:
            out.update(self.keys_of(ns, toks))
        return out

    def locked(self) -> set[Key]:
        return self.covered(self.locks.values())

    def pinned(self) -> set[Key]:
        return self.covered(+self.pins)

    def evict(self, n: int) -> list[int]:
        out = []
        protected = self.locked() | self.pinned()
        for _ in range(n):
            extended = {(ns, toks[: -self.ps]) for ns, toks in self.entries}
            cands = sorted((v[1], key) for key, v in self.entries.items()
                           if key not in protected and key not in extended)
            if not cands:
                break
            assert len(cands) == 1 or cands[0][0] != cands[1][0], "two evictable leaves share a time"
            out.append(self.entries.pop(cands[0][1])[0])
        self.evicted += len(out)
        return out

    def evictable(self) -> int:
        return len(self.entries) - len(self.locked() | self.pinned())


@dataclass
class Request:
    ns: object
    tokens: list[int]
    page_table: list[int]
    n_matched: int  # pages served by the cache (locked)
    handle: object


class RadixCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.known: list[tuple[int, ...]] = []
        self.requests: list[Request] = []
        self.held: list[list[int]] = []  # raw page holdings of "other callers"

    @initialize(ps=st.sampled_from([1, 2, 4]), n_pages=st.integers(4, 40))
    def setup(self, ps: int, n_pages: int) -> None:
        self.ps, self.total = ps, n_pages
        self.cache = RadixCache(page_size=ps)
        self.alloc = PageAllocator(n_pages, self.cache)
        self.model = NaiveCache(ps)

    # ---------------------------------------------------------------- helpers

    def draw_tokens(self, data) -> list[int]:
        base: list[int] = []
        if self.known and data.draw(st.booleans(), label="extend known"):
            seq = data.draw(st.sampled_from(self.known), label="known")
            base = list(seq[: data.draw(st.integers(0, len(seq)), label="cut")])
        toks = (base + data.draw(st.lists(st.integers(0, 2), max_size=12), label="ext"))[:MAX_TOKENS]
        if len(self.known) < 40:
            self.known.append(tuple(toks))
        return toks

    def held_pages(self) -> set[int]:
        out = {p for h in self.held for p in h}
        for r in self.requests:
            out.update(r.page_table[r.n_matched:])
        return out

    def tree_snapshot(self) -> tuple:
        return (tuple(self.cache.dump_tree(detail=True)), self.alloc.stats(),
                tuple(self.alloc.free_page_ids()))

    def checked_allocate(self, n: int) -> list[int] | None:
        """allocate(n), checking the outcome the model predicts (incl. which pages go)."""
        free_before = self.alloc.free_pages
        if n > free_before + self.model.evictable():
            before = self.tree_snapshot()
            with pytest.raises(OutOfPages):
                self.alloc.allocate(n)
            event("allocate: OutOfPages")
            assert self.tree_snapshot() == before, "OutOfPages changed something"
            return None
        evicted = self.model.evict(max(0, n - free_before))
        if evicted:
            event("allocate: evicted from the tree")
        candidates = set(self.alloc.free_page_ids().tolist()) | set(evicted)
        got = self.alloc.allocate(n).tolist()
        assert len(got) == n and len(set(got)) == n and set(got) <= candidates
        return got

    def match_checked(self, ns, toks):
        m = self.cache.match(toks, namespace=ns)
        expected = self.model.match(ns, toks)
        assert m.pages.tolist() == expected
        assert m.n_tokens == len(expected) * self.ps
        return m

    # ---------------------------------------------------------------- rules

    @rule(data=st.data(), ns=st.sampled_from(NAMESPACES), temp_lock=st.booleans())
    def match(self, data, ns, temp_lock) -> None:
        m = self.match_checked(ns, self.draw_tokens(data))
        if temp_lock:
            with self.cache.lock(m) as h:
                assert self.cache.stats().active_locks == len(self.model.locks) + 1
            assert not h.active

    @rule(data=st.data(), ns=st.sampled_from(NAMESPACES))
    def start_request(self, data, ns) -> None:
        toks = self.draw_tokens(data)
        m = self.match_checked(ns, toks)
        h = self.cache.lock(m)
        self.model.locks[h.uid] = (ns, tuple(toks[: m.n_tokens]))
        need = -(-len(toks) // self.ps) - m.n_pages
        private = self.checked_allocate(need)
        if private is None:
            self.cache.unlock(h)
            del self.model.locks[h.uid]
            return
        self.requests.append(Request(ns, toks, m.pages.tolist() + private, m.n_pages, h))

    @precondition(lambda self: self.requests)
    @rule(data=st.data(), cancel=st.booleans())
    def finish_request(self, data, cancel) -> None:
        r = self.requests.pop(data.draw(st.integers(0, len(self.requests) - 1), label="request"))
        private = r.page_table[r.n_matched:]
        if cancel:
            self.alloc.free(private)
        else:
            n_full = len(r.tokens) // self.ps
            dups = self.cache.insert(r.tokens, r.page_table[:n_full], namespace=r.ns)
            assert dups.tolist() == self.model.insert(r.ns, r.tokens, r.page_table[:n_full])
            assert set(dups.tolist()) <= set(private)
            if dups.size:
                event("finish: duplicate pages returned")
            self.alloc.free(dups)
            self.alloc.free(r.page_table[n_full:])
        self.cache.unlock(r.handle)
        del self.model.locks[r.handle.uid]

    @rule(data=st.data(), ns=st.sampled_from(NAMESPACES))
    def insert_fresh(self, data, ns) -> None:
        toks = self.draw_tokens(data)
        pages = self.checked_allocate(len(toks) // self.ps)
        if pages is None:
            return
        dups = self.cache.insert(np.asarray(toks, dtype=np.int64), pages, namespace=ns)
        assert dups.tolist() == self.model.insert(ns, toks, pages)
        self.alloc.free(dups)

    @rule(data=st.data(), ns=st.sampled_from(NAMESPACES))
    def pin(self, data, ns) -> None:
        toks = self.draw_tokens(data)
        n = len(toks) // self.ps
        if n == 0:
            return
        if self.model.longest(ns, toks) < n:
            before = self.tree_snapshot()
            with pytest.raises(NotCachedError):
                self.cache.pin(toks, namespace=ns)
            assert self.tree_snapshot() == before
            return
        assert self.cache.pin(toks, namespace=ns) == n * self.ps
        self.model.pin(ns, toks)

    @precondition(lambda self: self.model.pins)
    @rule(data=st.data())
    def unpin(self, data) -> None:
        ns, toks = data.draw(st.sampled_from(sorted(self.model.pins, key=repr)), label="pin")
        self.cache.unpin(list(toks), namespace=ns)
        self.model.pins[(ns, toks)] -= 1
        self.model.pins = +self.model.pins

    @rule(n=st.integers(0, 12))
    def evict(self, n) -> None:
        freed = self.cache.evict(n)
        assert freed.dtype == np.int32
        assert freed.tolist() == self.model.evict(n)
        event(f"evict: freed {'none' if freed.size == 0 else 'some'}")
        self.alloc.free(freed)

    @rule(n=st.integers(0, 8))
    def hold_pages(self, n) -> None:
        got = self.checked_allocate(n)
        if got:
            self.held.append(got)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release_held(self, data) -> None:
        self.alloc.free(self.held.pop(data.draw(st.integers(0, len(self.held) - 1), label="held")))

    # ---------------------------------------------------------------- invariants

    @invariant()
    def recount_and_compare(self) -> None:
        self.alloc.check_invariants()
        free = self.alloc.free_page_ids().tolist()
        tree = self.tree_pages()
        held = self.held_pages()
        parts = [set(free), set(tree), held]
        assert len(free) + len(tree) + len(held) == self.total == len(set().union(*parts)), \
            "page conservation: free + tree + held != total, or a page in two places"
        assert tree == {key: tuple(v) for key, v in self.model.entries.items()}
        self.check_stats()
        for r in self.requests:
            assert r.handle.active and r.handle.node.alive

    def tree_pages(self) -> dict:
        """The cache's content page by page: (ns, prefix) -> (page, last_access)."""
        prefix: dict[int, tuple[int, ...]] = {}
        out = {}
        for n in self.cache.dump_tree(detail=True):
            start = () if n.parent_uid is None else prefix[n.parent_uid]
            full = start + n.tokens
            prefix[n.uid] = full
            assert len(full) == n.depth_tokens
            for j, page in enumerate(n.pages):
                out[(n.namespace, full[: len(start) + (j + 1) * self.ps])] = (page, n.last_access)
        return out

    def check_stats(self) -> None:
        s = self.alloc.stats()
        m = self.model
        locked, pinned = m.locked(), m.pinned()
        assert s.total_pages == self.total
        assert s.free_pages == self.alloc.free_pages
        assert s.held_pages == len(self.held_pages())
        t = s.tree
        assert (t.in_tree_pages, t.locked_pages, t.pinned_pages, t.evictable_pages) == (
            len(m.entries), len(locked), len(pinned), len(m.entries) - len(locked | pinned))
        assert (t.query_tokens, t.hit_tokens, t.evicted_pages, t.insert_dedup_pages) == (
            m.query_tokens, m.hit_tokens, m.evicted, m.dedup)
        assert t.active_locks == len(m.locks) and t.pinned_prefixes == len(m.pins)


RadixCacheMachine.TestCase.settings = settings(stateful_step_count=50)
TestRadixCacheStateMachine = RadixCacheMachine.TestCase
