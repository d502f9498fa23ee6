"""The evictable leaves, oldest first.

A leaf's place is its logical access time (the cache's clock, bumped once per
match / insert / pin), so the order is deterministic and a leaf that becomes
evictable late (its last child was evicted, its last lock released) competes
with its *own* time rather than joining at the back. That rules out a plain
move-to-end list; a binary heap with lazy deletion gives O(log n) add and pop
and O(1) discard, and never scans the tree.

Heap entries are ``(time, uid)``; an entry is live only while ``_live[uid]``
still holds that same time. Stale entries are skipped on pop and dropped by an
occasional rebuild, so the heap stays within a constant factor of the set.
"""
from __future__ import annotations

import heapq
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")

_COMPACT_SLACK = 64


class LeafLRU(Generic[T]):
    """A set of items keyed by an int uid, popped in ``(time, uid)`` order."""

    __slots__ = ("_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int]] = []
        self._live: dict[int, tuple[int, T]] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, uid: int) -> bool:
        return uid in self._live

    def add(self, uid: int, time: int, item: T) -> None:
        """Insert ``item`` or move it to ``time`` (a touch)."""
        old = self._live.get(uid)
        self._live[uid] = (time, item)
        if old is None or old[0] != time:
            heapq.heappush(self._heap, (time, uid))
            if len(self._heap) > 2 * len(self._live) + _COMPACT_SLACK:
                self._compact()

    def discard(self, uid: int) -> None:
        """Remove ``uid`` if present (its heap entry goes stale)."""
        self._live.pop(uid, None)

    def pop_oldest(self) -> T | None:
        """Remove and return the item with the smallest ``(time, uid)``, or None when empty."""
        heap, live = self._heap, self._live
        while heap:
            time, uid = heapq.heappop(heap)
            entry = live.get(uid)
            if entry is not None and entry[0] == time:
                del live[uid]
                return entry[1]
        return None

    def items(self) -> Iterator[tuple[int, int, T]]:
        """``(uid, time, item)`` for every member, in no particular order (for checks and dumps)."""
        for uid, (time, item) in self._live.items():
            yield uid, time, item

    def _compact(self) -> None:
        self._heap = [(time, uid) for uid, (time, _) in self._live.items()]
        heapq.heapify(self._heap)
