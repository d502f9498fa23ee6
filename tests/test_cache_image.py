"""Random radix trees round-trip through a snapshot file: same nodes, same page
data, same pins, same eviction order; trimming drops exactly what evict would.

No engine: the "KV store" is a dict of page bytes, so hypothesis can build
hundreds of trees in a second.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixserve.snapshot_file import Snapshot, write_snapshot
from radixserve.snapshot_format import Geometry
from scheduler import PageAllocator, RadixCache
from scheduler.cache_image import capture, restore, trim

PS = 4
PAGE_BYTES = 64
GEOM = Geometry(page_size=PS, kv_dtype="f16", n_layer=2, n_head_kv=2, head_dim=8, page_bytes=PAGE_BYTES)
NAMESPACES = (None, "b", 3)


class FakeKV:
    def __init__(self, n_pages: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.pages = {p: self.rng.integers(0, 256, PAGE_BYTES, dtype=np.uint8) for p in range(n_pages)}

    def read_page(self, p: int) -> np.ndarray:
        return self.pages[p].copy()

    def write_page(self, p: int, data: bytes) -> None:
        self.pages[p] = np.frombuffer(data, dtype=np.uint8).copy()


# Token runs glued from a few bases, so that prefixes are shared and branch.
bases = st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=5 * PS), min_size=1, max_size=5)
ops = st.tuples(bases, st.lists(st.tuples(
    st.sampled_from(["insert", "insert", "insert", "match", "pin", "evict"]),
    st.sampled_from(NAMESPACES), st.integers(0, 4), st.integers(0, 4), st.integers(0, 5), st.integers(1, 6)),
    min_size=3, max_size=30))


def build(script, n_pages: int = 48) -> tuple[RadixCache, PageAllocator]:
    base, steps = script
    cache = RadixCache(PS)
    alloc = PageAllocator(n_pages, cache)
    for op, ns, i, j, cut, k in steps:
        toks = base[i % len(base)][: cut * PS] + base[j % len(base)]
        n_full = len(toks) // PS
        if op == "insert" and n_full and alloc.can_allocate(n_full):
            pages = alloc.allocate(n_full)
            alloc.free(cache.insert(toks, pages, ns))
        elif op == "match":
            cache.match(toks, ns)
        elif op == "pin" and cache.peek(toks, ns):
            cache.pin(toks[: cache.peek(toks, ns)], ns)
        elif op == "evict":
            alloc.free(cache.evict(k))
    cache.check_invariants()
    return cache, alloc


def by_prefix(cache: RadixCache) -> dict:
    """(namespace, whole path tokens) -> (page ids of the node, pin_ref) for every node."""
    infos = cache.dump_tree(detail=True)
    by_uid = {n.uid: n for n in infos}
    out = {}
    for n in infos:
        path, m = [], n
        while m is not None:
            path = list(m.tokens) + path
            m = by_uid.get(m.parent_uid) if m.parent_uid is not None else None
        out[(n.namespace, tuple(path))] = (n.pages, n.pin_ref)
    return out


def unpin_all(cache: RadixCache) -> None:
    image, handles = capture(cache)
    for h in handles:
        h.release()
    for i, n in enumerate(image.nodes):
        for _ in range(n.pins):
            cache.unpin(image.path_tokens(i), n.namespace)
    assert cache.stats().pinned_pages == 0


def eviction_order(cache: RadixCache, alloc: PageAllocator, kv: FakeKV) -> list[bytes]:
    """Unpin everything, then evict page by page: the data of each page, in order."""
    unpin_all(cache)
    out = []
    while cache.in_tree_pages:
        (p,) = cache.evict(1)
        out.append(kv.pages[int(p)].tobytes())
        alloc.free([p])
    return out


def round_trip(cache, kv, path, max_pages=None):
    image, handles = capture(cache)
    write_snapshot(path, image, model_identity="m", model_file="m.gguf", geometry=GEOM, read_page=kv.read_page)
    for h in handles:
        h.release()
    cache2 = RadixCache(PS)
    alloc2 = PageAllocator(cache.in_tree_pages + 5, cache2)
    kv2 = FakeKV(alloc2.total, seed=99)
    with Snapshot(path, model_identity="m", geometry=GEOM) as snap:
        img = snap.image if max_pages is None else trim(snap.image, max_pages)
        ids = alloc2.allocate(img.n_pages)
        for block, page in zip(img.page_ids(), ids):
            kv2.write_page(int(page), snap.read_page(int(block)))
        restore(cache2, img.with_pages(ids))
    alloc2.check_invariants()
    return cache2, alloc2, kv2


@settings(max_examples=60, deadline=None)
@given(script=ops)
def test_random_trees_round_trip(tmp_path_factory, script):
    path = os.path.join(tmp_path_factory.mktemp("snap"), "cache.rsx")
    cache, alloc = build(script)
    kv = FakeKV(alloc.total)
    cache2, alloc2, kv2 = round_trip(cache, kv, path)
    a, b = by_prefix(cache), by_prefix(cache2)
    assert a.keys() == b.keys()
    for key, (pages, pin_ref) in a.items():
        pages2, pin_ref2 = b[key]
        assert pin_ref2 == pin_ref
        assert [kv.pages[p].tobytes() for p in pages] == [kv2.pages[p].tobytes() for p in pages2]
    assert cache2.stats().pinned_pages == cache.stats().pinned_pages
    assert eviction_order(cache2, alloc2, kv2) == eviction_order(cache, alloc, kv)


@settings(max_examples=60, deadline=None)
@given(script=ops, budget=st.integers(0, 30))
def test_trim_keeps_what_evict_would_keep(tmp_path_factory, script, budget):
    """Loading into a smaller budget leaves the tree that evicting down to it leaves."""
    path = os.path.join(tmp_path_factory.mktemp("snap"), "cache.rsx")
    cache, alloc = build(script)
    unpin_all(cache)  # pins aside: evict must be free to choose
    kv = FakeKV(alloc.total)
    cache2, alloc2, kv2 = round_trip(cache, kv, path, max_pages=budget)
    alloc.free(cache.evict(max(0, cache.in_tree_pages - budget)))
    assert cache2.in_tree_pages == cache.in_tree_pages
    assert eviction_order(cache2, alloc2, kv2) == eviction_order(cache, alloc, kv)


def test_capture_locks_without_touching_lru(tmp_path):
    cache, alloc = build(([list(range(4)) * 3, [1] * 8], [("insert", None, 0, 0, 0, 1), ("insert", None, 0, 1, 0, 1)]))
    before = [(n.uid, n.last_access) for n in cache.dump_tree()]
    image, handles = capture(cache)
    assert cache.evictable_pages == 0 and image.n_pages == cache.in_tree_pages == 5
    assert [(n.uid, n.last_access) for n in cache.dump_tree()] == before
    for h in handles:
        h.release()
    assert cache.evictable_pages == 5
    cache.check_invariants()


def test_capture_with_a_page_limit_leaves_the_lru_leaves_unlocked():
    cache, alloc = build(([[1] * 12, [2] * 8], [("insert", None, 0, 0, 0, 1), ("insert", None, 0, 1, 0, 1),
                                                ("match", None, 0, 0, 0, 1)]))
    image, handles = capture(cache, max_pages=4)
    assert image.n_pages == 3 and cache.evictable_pages == 2  # whole nodes only; [2]*8 left out
    freed = cache.evict(5)
    assert freed.size == 2 and not set(freed.tolist()) & set(image.page_ids().tolist())
    alloc.free(freed)
    for h in handles:
        h.release()
    cache.check_invariants()


def test_restore_refuses_a_non_empty_cache_and_a_bad_image():
    cache, _ = build(([[1] * 8], [("insert", None, 0, 0, 0, 1)]))
    image, handles = capture(cache)
    for h in handles:
        h.release()
    with pytest.raises(ValueError, match="empty cache"):
        restore(cache, image)
    bad = image.with_pages(np.zeros(image.n_pages, dtype=np.int32))
    with pytest.raises(ValueError, match="used twice"):
        restore(RadixCache(PS), bad)


def test_lock_nodes_refuses_a_node_no_longer_in_the_tree():
    cache, alloc = build(([[1] * 8, [2] * 8], [("insert", None, 0, 0, 0, 1), ("insert", None, 0, 1, 0, 1)]))
    uids = [n.uid for n in cache.dump_tree()]
    alloc.free(cache.evict(2))  # the older leaf goes
    with pytest.raises(Exception, match="no longer in the tree"):
        cache.lock_nodes(uids)
    assert cache.stats().locked_pages == 0  # nothing was locked
