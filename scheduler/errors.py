"""Exceptions of the scheduler's cache layer.

Each one names the bad argument or the broken rule, so a caller (the batching
loop, a front's error handler, a test) can tell misuse from memory pressure:
``CacheInputError`` is a caller bug, ``OutOfPages`` is load, and
``CacheInvariantError`` is a bug in this package.
"""
from __future__ import annotations


class CacheError(Exception):
    """Base class of every error raised by the radix cache and the page allocator."""


class CacheInputError(CacheError, ValueError):
    """A bad argument value: a negative token or page id, ragged pages, a duplicated page."""


class CacheTypeError(CacheError, TypeError):
    """An argument of the wrong type or shape: floats, strings, 2-D arrays, bools."""


class PageOwnershipError(CacheInputError):
    """A page would be in two places: inserted while already in the tree, freed twice,
    or freed while the tree owns it."""


class StaleMatchError(CacheError):
    """A match result was locked after the tree changed under it (its node was evicted
    or truncated). Match again and lock at once."""


class LockStateError(CacheError):
    """A lock handle released twice, or a handle from another cache."""


class NotCachedError(CacheError, LookupError):
    """``pin`` of a prefix that is not fully in the tree, or ``unpin`` of one not pinned."""


class OutOfPages(CacheError, MemoryError):
    """An allocation that cannot be met even after evicting every evictable page.

    Raised before anything changes: the free list and the tree are as they were.
    """

    def __init__(self, requested: int, free: int, evictable: int) -> None:
        self.requested = requested
        self.free = free
        self.evictable = evictable
        super().__init__(
            f"out of KV pages: requested {requested}, free {free}, evictable {evictable}; "
            f"the rest is locked or pinned by running requests or held by callers"
        )


class CacheInvariantError(CacheError, AssertionError):
    """``check_invariants`` found the bookkeeping inconsistent: a bug in this package."""
