"""Example tests for the radix prefix cache: exact page ids, exact counts, clear errors.

The state machine (test_radix_cache_state_machine.py) shows the cache agrees
with a naive model under any sequence of operations; these pin the scenarios
people will ask about (a long system prompt shared by many requests, rotating
that prompt at run time) and the behaviour at the edges, with page ids written
out so a change of policy shows up as a diff.
"""
from __future__ import annotations

import numpy as np
import pytest

from scheduler import (
    CacheInputError,
    CacheTypeError,
    LockStateError,
    NotCachedError,
    OutOfPages,
    PageAllocator,
    PageOwnershipError,
    RadixCache,
    StaleMatchError,
)


def toks(*runs: tuple[int, int]) -> np.ndarray:
    """Concatenated ``range(start, start + n)`` runs as int32 tokens."""
    return np.concatenate([np.arange(s, s + n, dtype=np.int32) for s, n in runs])


def make(ps: int = 4, n_pages: int = 64) -> tuple[RadixCache, PageAllocator]:
    cache = RadixCache(page_size=ps)
    return cache, PageAllocator(n_pages, cache)


def run_request(cache: RadixCache, alloc: PageAllocator, tokens: np.ndarray, namespace=None):
    """What the scheduler does: match, lock, allocate the rest. Returns (handle, page table)."""
    m = cache.match(tokens, namespace=namespace)
    h = cache.lock(m)
    private = alloc.allocate(-(-tokens.size // cache.page_size) - m.n_pages)
    return h, np.concatenate([m.pages, private])


def finish_request(cache, alloc, tokens, handle, table, namespace=None) -> np.ndarray:
    """Insert the full pages, free duplicates and the partial page, unlock. Returns the dups."""
    n_full = tokens.size // cache.page_size
    dups = cache.insert(tokens, table[:n_full], namespace=namespace)
    alloc.free(dups)
    alloc.free(table[n_full:])
    cache.unlock(handle)
    return dups


# ---------------------------------------------------------------- the seed scenario


@pytest.mark.parametrize("ps", [8, 16])
def test_system_prompt_and_ten_requests_page_counts(ps: int) -> None:
    cache, alloc = make(ps, n_pages=2000)
    system = toks((100_000, 6000))
    table = alloc.allocate(-(-6000 // ps))
    assert cache.insert(system, table[: 6000 // ps]).size == 0
    alloc.free(table[6000 // ps:])
    cache.pin(system)

    users = [np.concatenate([system, toks((i * 1000, 1000))]) for i in range(10)]
    running = [run_request(cache, alloc, u) for u in users]
    for h, _ in running:
        assert h.n_tokens == 6000  # every request is served the whole system prompt
    s = alloc.stats()
    expected = -(-6000 // ps) + 10 * -(-1000 // ps)
    assert s.free_pages + s.tree.in_tree_pages + s.held_pages == 2000
    assert s.tree.in_tree_pages + s.held_pages == expected
    assert (s.tree.locked_pages, s.tree.pinned_pages) == (6000 // ps, 6000 // ps)
    assert s.tree.hit_tokens == 10 * 6000

    for u, (h, t) in zip(users, running):
        assert finish_request(cache, alloc, u, h, t).size == 0
    s = alloc.stats()
    assert s.tree.in_tree_pages == 6000 // ps + 10 * (1000 // ps)
    assert s.held_pages == 0 and s.tree.locked_pages == 0 and s.tree.active_locks == 0
    assert s.tree.nodes == 11
    alloc.check_invariants()


def test_rotating_the_system_prompt_evicts_the_old_branch_first() -> None:
    ps = 16
    cache, alloc = make(ps, n_pages=120)
    old, new = toks((50_000, 320)), toks((60_000, 320))  # 20 pages each
    cache.insert(old, alloc.allocate(20))
    cache.pin(old)
    a_users = [np.concatenate([old, toks((i * 100, 64))]) for i in range(3)]
    a_running = [run_request(cache, alloc, u) for u in a_users]

    cache.insert(new, alloc.allocate(20))  # rotate: new prompt, new branch
    cache.pin(new)
    cache.unpin(old)
    assert cache.stats().evictable_pages == 0  # old: locked by its requests; new: pinned
    b_users = [np.concatenate([new, toks((i * 100 + 7, 64))]) for i in range(3)]
    b_running = [run_request(cache, alloc, u) for u in b_users]
    old_pages: set[int] = set()
    for u, (h, t) in zip(a_users, a_running):  # in-flight old requests finish after the switch
        finish_request(cache, alloc, u, h, t)
        old_pages |= set(t[: u.size // ps].tolist())
    for u, (h, t) in zip(b_users, b_running):
        finish_request(cache, alloc, u, h, t)
    assert len(old_pages) == 20 + 3 * 4
    s = alloc.stats()
    assert s.tree.in_tree_pages == 20 + 3 * 4 + 20 + 3 * 4
    got = alloc.allocate(s.free_pages + len(old_pages))
    assert old_pages <= set(got.tolist())  # the whole old branch went, and nothing else
    assert cache.match(old).n_tokens == 0
    assert all(cache.match(u).n_tokens == 320 + 64 for u in b_users)
    alloc.check_invariants()


# ---------------------------------------------------------------- exact ids and order


def test_match_is_page_aligned_and_lists_pages_in_order() -> None:
    cache, alloc = make(ps=4)
    seq = toks((0, 18))  # 4 full pages + 2 tokens
    pages = alloc.allocate(4)
    assert pages.tolist() == [0, 1, 2, 3]
    assert cache.insert(seq, pages).tolist() == []
    m = cache.match(seq)
    assert (m.pages.tolist(), m.n_tokens, m.pages.dtype) == ([0, 1, 2, 3], 16, np.int32)
    m = cache.match(np.concatenate([seq[:9], [999, 999, 999]]))  # diverges inside page 2
    assert (m.pages.tolist(), m.n_tokens) == ([0, 1], 8)
    assert cache.match(seq[:3]).n_tokens == 0  # less than a page is never shared
    assert cache.match(seq.tolist()).n_tokens == 16  # lists are fine too
    alloc.check_invariants()


def test_insert_dedup_returns_only_the_callers_duplicate_pages() -> None:
    cache, alloc = make(ps=2)
    seq = toks((0, 8))
    h1, t1 = run_request(cache, alloc, seq)  # two requests compute the same prompt at once
    h2, t2 = run_request(cache, alloc, seq)
    assert (t1.tolist(), t2.tolist()) == ([0, 1, 2, 3], [4, 5, 6, 7])
    assert finish_request(cache, alloc, seq, h1, t1).tolist() == []
    assert finish_request(cache, alloc, seq, h2, t2).tolist() == [4, 5, 6, 7]
    # a follow-up turn that matched the prefix passes the tree's own pages back: not dups
    longer = toks((0, 12))
    h3, t3 = run_request(cache, alloc, longer)
    assert t3.tolist()[:4] == [0, 1, 2, 3]
    assert finish_request(cache, alloc, longer, h3, t3).tolist() == []
    s = alloc.stats()
    assert (s.tree.in_tree_pages, s.tree.insert_dedup_pages, s.held_pages) == (6, 4, 0)
    alloc.check_invariants()


def test_eviction_is_lru_by_leaf_and_tail_first() -> None:
    cache, alloc = make(ps=1, n_pages=16)
    cache.insert([1, 2, 3], alloc.allocate(3))  # pages 0 1 2   (t=1)
    cache.insert([1, 2, 7, 8], alloc.allocate(4))  # dup 3 4; 5 6 new under [1 2] (t=2)
    alloc.free([3, 4])
    cache.insert([9], alloc.allocate(1))  # page 3: freed pages go out again in order, t=3
    cache.match([1, 2, 3])  # refresh the first branch (t=4)
    # leaves by age: [7 8] (t=2), [9] (t=3), [3] (t=4)
    assert cache.evict(1).tolist() == [6]  # the tail page of the oldest leaf only
    assert cache.evict(2).tolist() == [5, 3]
    # now [1 2] has one child [3] (t=4); [3] goes, then its parent, which became a leaf
    assert cache.evict(10).tolist() == [2, 1, 0]
    assert cache.evict(1).tolist() == []
    s = cache.stats()
    assert (s.in_tree_pages, s.nodes, s.evicted_pages) == (0, 0, 6)
    alloc.free([6, 5, 3, 2, 1, 0])
    alloc.check_invariants()


def test_locked_and_pinned_prefixes_survive_eviction() -> None:
    cache, alloc = make(ps=2, n_pages=10)
    a, b, c = toks((0, 4)), toks((100, 4)), toks((200, 4))
    for seq in (a, b, c):
        cache.insert(seq, alloc.allocate(2))
    cache.pin(b)
    with cache.lock(cache.match(a)) as h:
        assert cache.evict(100).tolist() == [5, 4]  # only c was evictable
        assert cache.stats().evictable_pages == 0
        with pytest.raises(OutOfPages):
            alloc.allocate(alloc.free_pages + 1)
    assert not h.active
    assert cache.evict(100).tolist() == [1, 0]
    cache.unpin(b)
    assert cache.evict(100).tolist() == [3, 2]
    alloc.free([5, 4, 1, 0, 3, 2])
    alloc.check_invariants()


def test_a_split_keeps_locks_and_pins_on_the_same_prefix() -> None:
    cache, alloc = make(ps=2)
    seq = toks((0, 12))
    cache.insert(seq, alloc.allocate(6))
    cache.pin(seq)
    h = cache.lock(cache.match(seq))
    cache.match(seq[:4])  # splits the node in two
    extra = alloc.allocate(1)
    cache.insert(np.concatenate([seq[:6], [77, 78]]), np.concatenate([[0, 1, 2], extra]))
    assert cache.stats().nodes == 4
    alloc.check_invariants()
    cache.unlock(h)
    cache.unpin(seq)
    s = cache.stats()
    assert (s.locked_pages, s.pinned_pages, s.evictable_pages) == (0, 0, 7)
    alloc.check_invariants()


def test_namespaces_never_share_a_prefix() -> None:
    cache, alloc = make(ps=2)
    seq = toks((0, 6))
    cache.insert(seq, alloc.allocate(3), namespace="model-a")
    assert cache.match(seq).n_tokens == 0
    assert cache.match(seq, namespace="model-b").n_tokens == 0
    assert cache.match(seq, namespace=3).n_tokens == 0
    assert cache.match(seq, namespace="model-a").pages.tolist() == [0, 1, 2]
    assert cache.insert(seq, alloc.allocate(3), namespace=3).tolist() == []
    assert cache.match(seq, namespace=3).pages.tolist() == [3, 4, 5]
    assert {n.namespace for n in cache.dump_tree()} == {"model-a", 3}
    alloc.check_invariants()


def test_out_of_pages_changes_nothing() -> None:
    cache, alloc = make(ps=2, n_pages=8)
    cache.insert(toks((0, 6)), alloc.allocate(3))
    held = alloc.allocate(2)
    h = cache.lock(cache.match(toks((0, 4))))  # 2 of the 3 tree pages locked
    before = (cache.dump_tree(detail=True), alloc.stats(), alloc.free_page_ids().tolist())
    with pytest.raises(OutOfPages) as err:
        alloc.allocate(5)  # 3 free + 1 evictable
    assert (err.value.requested, err.value.free, err.value.evictable) == (5, 3, 1)
    assert "requested 5, free 3, evictable 1" in str(err.value)
    assert (cache.dump_tree(detail=True), alloc.stats(), alloc.free_page_ids().tolist()) == before
    assert alloc.allocate(4).size == 4  # the boundary case succeeds, evicting one page
    cache.unlock(h)
    alloc.free(held)
    alloc.check_invariants()


def test_dump_tree_reports_what_the_http_endpoint_needs() -> None:
    cache, alloc = make(ps=2)
    cache.insert(toks((0, 4)), alloc.allocate(2))
    cache.insert(toks((0, 2), (50, 2)), np.array([0, 9], np.int32))
    h = cache.lock(cache.match(toks((0, 4))))
    nodes = cache.dump_tree()
    assert [(n.depth_tokens, n.n_tokens, n.n_pages, n.lock_ref, n.evictable_leaf) for n in nodes] == [
        (2, 2, 1, 1, False), (4, 2, 1, 1, False), (4, 2, 1, 0, True)]
    assert nodes[1].parent_uid == nodes[0].uid and nodes[0].parent_uid is None
    assert nodes[0].pages is None and cache.dump_tree(detail=True)[2].pages == (9,)
    assert [n.last_access for n in nodes] == [3, 3, 2]
    h.release()
    stats = alloc.stats().as_dict()
    assert stats["nodes"] == 3 and stats["hit_rate"] == pytest.approx(4 / 4)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad, err", [
    (np.array([1.0, 2.0]), CacheTypeError),
    ("hello", CacheTypeError),
    (np.zeros((2, 4), np.int32), CacheTypeError),
    ([1, [2, 3]], CacheTypeError),
    ([True, False], CacheTypeError),
    (np.array([3, -1, 2]), CacheInputError),
    ([1, 2, 2**40], CacheInputError),
    (None, CacheTypeError),
])
def test_bad_tokens_get_clear_errors(bad, err) -> None:
    cache, _ = make()
    with pytest.raises(err, match="tokens"):
        cache.match(bad)
    with pytest.raises(err, match="tokens"):
        cache.insert(bad, [0])
    assert cache.stats().query_tokens == 0


def test_bad_pages_and_arguments_get_clear_errors() -> None:
    cache, alloc = make(ps=4, n_pages=8)
    seq = toks((0, 8))
    with pytest.raises(CacheInputError, match="ragged pages: 8 tokens make 2 full pages"):
        cache.insert(seq, [0, 1, 2])
    with pytest.raises(CacheInputError, match="negative"):
        cache.insert(seq, [0, -3])
    with pytest.raises(PageOwnershipError, match="twice"):
        cache.insert(seq, [1, 1])
    with pytest.raises(CacheTypeError, match="namespace"):
        cache.match(seq, namespace=True)
    with pytest.raises(CacheTypeError, match="namespace"):
        cache.match(seq, namespace=1.5)
    with pytest.raises(CacheInputError):
        RadixCache(page_size=0)
    with pytest.raises(CacheTypeError):
        cache.evict(1.5)
    with pytest.raises(CacheInputError):
        alloc.allocate(-1)
    cache.insert(seq, alloc.allocate(2))
    with pytest.raises(PageOwnershipError, match="page 1 is already in the radix tree"):
        cache.insert(toks((50, 8)), [7, 1])
    with pytest.raises(PageOwnershipError, match="owned by the radix tree"):
        alloc.free([0])
    with pytest.raises(PageOwnershipError, match="double free"):
        alloc.free([5])
    with pytest.raises(CacheInputError, match="out of range"):
        alloc.free([8])
    alloc.check_invariants()
    assert cache.stats().nodes == 1


def test_lock_misuse_and_pin_misuse_are_refused() -> None:
    cache, alloc = make(ps=2)
    seq = toks((0, 6))
    cache.insert(seq, alloc.allocate(3))
    h = cache.lock(cache.match(seq))
    cache.unlock(h)
    with pytest.raises(LockStateError):
        cache.unlock(h)
    with pytest.raises(CacheTypeError):
        cache.lock("not a match")
    with pytest.raises(LockStateError, match="another cache"):
        RadixCache(page_size=2).lock(cache.match(seq))
    stale = cache.match(seq)
    alloc.free(cache.evict(1))  # shortens the matched node
    with pytest.raises(StaleMatchError):
        cache.lock(stale)
    with pytest.raises(NotCachedError):
        cache.pin(seq)  # only 4 of 6 tokens remain
    with pytest.raises(NotCachedError):
        cache.unpin(seq[:4])
    with pytest.raises(CacheInputError, match="full page"):
        cache.pin(seq[:1])
    assert cache.pin(seq[:5]) == 4  # the page-aligned part
    cache.unpin(seq[:5])
    alloc.check_invariants()
