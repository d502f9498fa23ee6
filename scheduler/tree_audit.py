"""``RadixCache.check_invariants``: recount the whole tree and compare.

Nothing here trusts an incremental counter: page ownership, lock and pin
counts, the evictable set and the statistics are all rebuilt from the nodes,
the live lock handles and the pin table, then compared with what the cache
kept. The property tests call it after every step, so it must really check
(unlike an integrity check that only walks the tree).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from .cache_stats import TreeCounters
from .errors import CacheInvariantError
from .handles import LockHandle
from .lru import LeafLRU
from .page_set import PageSet
from .radix_node import Node
from .token_arrays import Namespace


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise CacheInvariantError(msg)


def _walk(root: Node, page_size: int, clock: int) -> list[Node]:
    """Every non-root node under ``root``, checking each node's local shape."""
    _check(root.parent is None and root.end == 0 and root.tokens.size == 0, "malformed root")
    _check(root.lock_ref == 0 and root.pin_ref == 0, "a root holds lock/pin counts")
    out: list[Node] = []
    stack = [root]
    while stack:
        parent = stack.pop()
        for key, n in parent.children.items():
            _check(n.alive, f"node {n.uid} is in the tree but marked evicted")
            _check(n.parent is parent, f"node {n.uid} has a wrong parent link")
            _check(n.tokens.dtype == np.int32 and n.pages.dtype == np.int32, f"node {n.uid} dtype")
            _check(n.n_pages >= 1, f"node {n.uid} is empty")
            _check(n.tokens.size == n.n_pages * page_size, f"node {n.uid}: tokens are not whole pages")
            _check(not n.tokens.flags.writeable and not n.pages.flags.writeable,
                   f"node {n.uid}: arrays are writeable (tree pages must be immutable)")
            _check(n.tokens.tobytes() == n.raw and not n.tokens.flags.owndata,
                   f"node {n.uid}: tokens are not a view of its raw bytes")
            _check(key == n.tokens[:page_size].tobytes(), f"node {n.uid} is filed under a wrong key")
            _check(n.end == parent.end + n.tokens.size, f"node {n.uid}: end {n.end} is wrong")
            _check(n.last_access <= clock, f"node {n.uid} was accessed in the future")
            _check(parent.parent is None or n.last_access <= parent.last_access,
                   f"node {n.uid} is more recent than its parent")
            out.append(n)
            stack.append(n)
    return out


def _expected_refs(locks: dict[int, LockHandle],
                   pins: dict[tuple[Namespace, bytes], tuple[Node, int]],
                   ) -> tuple[Counter[int], Counter[int]]:
    lock_refs: Counter[int] = Counter()
    pin_refs: Counter[int] = Counter()
    for uid, h in locks.items():
        _check(h.uid == uid and h.active, f"lock table entry {uid} is inconsistent")
        _check(h.node.alive and h.node.end == h.n_tokens, f"lock {uid} points at a changed node")
        for n in h.node.path_to_root():
            lock_refs[n.uid] += 1
    for (_, key), (node, count) in pins.items():
        _check(count >= 1, "a pin entry with count 0")
        _check(node.alive and node.end * node.tokens.itemsize == len(key),
               "a pin points at a changed node")
        for n in node.path_to_root():
            pin_refs[n.uid] += count
    return lock_refs, pin_refs


def audit_tree(*, roots: dict[Namespace, Node], page_size: int, clock: int,
               counters: TreeCounters, lru: LeafLRU[Node], owned: PageSet,
               locks: dict[int, LockHandle],
               pins: dict[tuple[Namespace, bytes], tuple[Node, int]]) -> None:
    """Raise CacheInvariantError unless every kept fact equals a recount."""
    nodes = [n for root in roots.values() for n in _walk(root, page_size, clock)]
    _check(len({n.uid for n in nodes}) == len(nodes), "a node appears twice")

    pages = np.concatenate([n.pages for n in nodes]) if nodes else np.empty(0, np.int32)
    _check(np.unique(pages).size == pages.size, "a page is owned by two nodes")
    _check(np.array_equal(np.sort(pages), owned.to_array()), "the owned-page bitmap is stale")
    _check(len(owned) == pages.size, "the owned-page count is stale")

    lock_refs, pin_refs = _expected_refs(locks, pins)
    live = {n.uid for n in nodes}
    _check(set(lock_refs) <= live and set(pin_refs) <= live, "a lock or pin outside the tree")
    for n in nodes:
        _check(n.lock_ref == lock_refs[n.uid], f"node {n.uid}: lock_ref {n.lock_ref} != {lock_refs[n.uid]}")
        _check(n.pin_ref == pin_refs[n.uid], f"node {n.uid}: pin_ref {n.pin_ref} != {pin_refs[n.uid]}")

    recount = TreeCounters(
        in_tree_pages=int(pages.size),
        locked_pages=sum(n.n_pages for n in nodes if n.lock_ref > 0),
        pinned_pages=sum(n.n_pages for n in nodes if n.pin_ref > 0),
        protected_pages=sum(n.n_pages for n in nodes if n.protected),
        nodes=len(nodes),
        query_tokens=counters.query_tokens, hit_tokens=counters.hit_tokens,
        evicted_pages=counters.evicted_pages, insert_dedup_pages=counters.insert_dedup_pages,
    )
    _check(recount == counters, f"counters {counters} != recount {recount}")
    _check(0 <= counters.hit_tokens <= counters.query_tokens, "more hits than queried tokens")

    leaves = {n.uid: n for n in nodes if n.evictable_leaf}
    members = {uid: (time, item) for uid, time, item in lru.items()}
    _check(set(members) == set(leaves), "the evictable set differs from the unprotected leaves")
    for uid, (time, item) in members.items():
        _check(item is leaves[uid] and time == item.last_access, f"leaf {uid} has a stale LRU time")
