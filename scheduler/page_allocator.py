"""The page pool beside the radix tree: which KV page ids are free.

Every page id in ``[0, n_pages)`` is in exactly one place: this free list, the
radix tree, or held privately by a caller (a running request's page table).
``allocate`` takes from the free list and, when it runs short, has the tree
evict least-recently-used unprotected pages first; if even that cannot meet
the request it raises ``OutOfPages`` before touching anything.

The free list is a numpy stack (last freed, first reused: warm pages go back
out first) with a bool mirror so a double free is caught in O(len).
"""
from __future__ import annotations

import numpy as np

from .cache_stats import CacheStats
from .errors import CacheInputError, CacheInvariantError, OutOfPages, PageOwnershipError
from .radix_cache import RadixCache
from .token_arrays import as_id_array, check_count


class PageAllocator:
    """Free list of ``n_pages`` page ids that evicts from ``cache`` under pressure."""

    __slots__ = ("total", "cache", "_stack", "_top", "_is_free")

    def __init__(self, n_pages: int, cache: RadixCache) -> None:
        n_pages = check_count(n_pages, "n_pages")
        if n_pages < 1:
            raise CacheInputError("n_pages must be >= 1")
        if not isinstance(cache, RadixCache):
            raise TypeError(f"cache must be a RadixCache, got {type(cache).__name__}")
        self.total = n_pages
        self.cache = cache
        # _stack[:_top] are the free ids; the top of the stack is _stack[_top - 1].
        self._stack = np.arange(n_pages - 1, -1, -1, dtype=np.int32)
        self._top = n_pages
        self._is_free = np.ones(n_pages, dtype=bool)

    @property
    def free_pages(self) -> int:
        return self._top

    def free_page_ids(self) -> np.ndarray:
        """A copy of the free ids, next to be handed out first (for checks and dumps)."""
        return self._stack[: self._top][::-1].copy()

    def can_allocate(self, n: int) -> bool:
        """Would ``allocate(n)`` succeed now (counting evictable tree pages)?"""
        return n <= self._top + self.cache.evictable_pages

    def allocate(self, n: object) -> np.ndarray:
        """``n`` page ids now private to the caller, evicting from the tree if needed.

        Raises OutOfPages, changing nothing, when free + evictable < n.
        Mutates: the free list; the tree when it evicts.
        """
        n = check_count(n, "n")
        if n > self._top:
            need = n - self._top
            if need > self.cache.evictable_pages:
                raise OutOfPages(n, self._top, self.cache.evictable_pages)
            freed = self.cache.evict(need)
            if freed.size != need:
                raise CacheInvariantError(f"evict({need}) freed {freed.size} pages")
            self._push(freed)
        out = self._stack[self._top - n: self._top][::-1].copy()
        self._top -= n
        self._is_free[out] = False
        return out

    def free(self, pages: object) -> None:
        """Return private pages (a finished request's, ``insert``'s duplicates, ``evict``'s output).

        Raises, changing nothing, on an id out of range, a repeated id, a page
        already free, or a page the tree owns.
        """
        p = as_id_array(pages, "pages")
        if p.size == 0:
            return
        if int(p.max()) >= self.total:
            raise CacheInputError(f"page {int(p.max())} is out of range [0, {self.total})")
        if np.unique(p).size != p.size:
            raise PageOwnershipError("pages holds the same page id twice")
        already = self._is_free[p]
        if already.any():
            raise PageOwnershipError(f"page {int(p[already][0])} is already free (double free)")
        in_tree = self.cache.owns_mask(p)
        if in_tree.any():
            raise PageOwnershipError(
                f"page {int(p[in_tree][0])} is owned by the radix tree; evict it instead")
        self._push(p)

    def _push(self, pages: np.ndarray) -> None:
        self._stack[self._top: self._top + pages.size] = pages[::-1]
        self._top += pages.size
        self._is_free[pages] = True

    def stats(self) -> CacheStats:
        """Exact pool and tree statistics, O(1)."""
        tree = self.cache.stats()
        held = self.total - self._top - tree.in_tree_pages
        return CacheStats(total_pages=self.total, free_pages=self._top, held_pages=held, tree=tree)

    def check_invariants(self) -> None:
        """The tree's own audit, plus: the free list is exact and disjoint from the tree."""
        self.cache.check_invariants()
        free = self._stack[: self._top]
        ok = (np.unique(free).size == free.size
              and np.array_equal(np.sort(free), np.flatnonzero(self._is_free)))
        if not ok:
            raise CacheInvariantError("the free stack and the free bitmap disagree")
        if self.cache.owns_mask(free).any():
            raise CacheInvariantError("a page is both free and in the tree")
        in_pool = self.cache.owns_mask(np.arange(self.total, dtype=np.int32))
        if int(in_pool.sum()) != self.cache.in_tree_pages:
            raise CacheInvariantError("the tree owns page ids outside this pool")
