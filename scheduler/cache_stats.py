"""Exact statistics of the radix cache and its page pool.

The tree keeps ``TreeCounters`` up to date on every transition (a node's lock
count going 0 -> 1, a page entering or leaving the tree), so ``stats()`` is O(1)
and exact rather than sampled. ``RadixCache.check_invariants`` recounts them
from scratch; a mismatch is a bug. Snapshots are frozen so a reader (the
``/v1/cache`` endpoint, a benchmark) can keep them without seeing later changes.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from .token_arrays import Namespace


@dataclass(slots=True)
class TreeCounters:
    """Live counters owned by one RadixCache (mutated in place; never handed out)."""

    in_tree_pages: int = 0
    locked_pages: int = 0  # pages of nodes with lock_ref > 0
    pinned_pages: int = 0  # pages of nodes with pin_ref > 0
    protected_pages: int = 0  # pages of nodes locked or pinned (never evicted)
    nodes: int = 0  # excluding the namespace roots
    query_tokens: int = 0
    hit_tokens: int = 0
    evicted_pages: int = 0
    insert_dedup_pages: int = 0


@dataclass(frozen=True, slots=True)
class TreeStats:
    """What the tree holds now, and what it has done since it was built."""

    in_tree_pages: int
    evictable_pages: int  # in the tree, neither locked nor pinned: eviction can free them all
    locked_pages: int
    pinned_pages: int
    nodes: int
    active_locks: int
    pinned_prefixes: int
    query_tokens: int
    hit_tokens: int
    evicted_pages: int
    insert_dedup_pages: int

    @property
    def hit_rate(self) -> float:
        """Fraction of queried tokens served from the cache (0 before any query)."""
        return self.hit_tokens / self.query_tokens if self.query_tokens else 0.0

    @classmethod
    def from_counters(cls, c: TreeCounters, active_locks: int, pinned_prefixes: int) -> "TreeStats":
        return cls(
            in_tree_pages=c.in_tree_pages,
            evictable_pages=c.in_tree_pages - c.protected_pages,
            locked_pages=c.locked_pages,
            pinned_pages=c.pinned_pages,
            nodes=c.nodes,
            active_locks=active_locks,
            pinned_prefixes=pinned_prefixes,
            query_tokens=c.query_tokens,
            hit_tokens=c.hit_tokens,
            evicted_pages=c.evicted_pages,
            insert_dedup_pages=c.insert_dedup_pages,
        )


@dataclass(frozen=True, slots=True)
class CacheStats:
    """The pool's view: every page is free, in the tree, or held by a caller.

    ``held_pages`` (private to running requests) is derived from conservation,
    ``total = free + in_tree + held``; the allocator's invariant check verifies
    the parts independently.
    """

    total_pages: int
    free_pages: int
    held_pages: int
    tree: TreeStats

    def as_dict(self) -> dict[str, float | int]:
        """A flat JSON-ready dict (tree fields inline, plus ``hit_rate``)."""
        out: dict[str, float | int] = {
            "total_pages": self.total_pages,
            "free_pages": self.free_pages,
            "held_pages": self.held_pages,
        }
        for f in fields(TreeStats):
            out[f.name] = getattr(self.tree, f.name)
        out["hit_rate"] = self.tree.hit_rate
        return out


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of ``RadixCache.dump_tree()``: enough to draw the tree, no page contents.

    ``pages`` and ``tokens`` are filled only when asked for (tests, debugging); the
    HTTP dump omits them, since a long prompt's node would be kilobytes.
    """

    uid: int
    parent_uid: int | None  # None: a child of its namespace's root
    namespace: Namespace
    depth_tokens: int  # tokens from the root to the end of this node
    n_tokens: int
    n_pages: int
    lock_ref: int
    pin_ref: int
    last_access: int
    evictable_leaf: bool
    pages: tuple[int, ...] | None = None
    tokens: tuple[int, ...] | None = None
