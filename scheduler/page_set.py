"""A growable bitmap of page ids: which pages the radix tree owns.

The tree needs an O(len) answer to "is any of these pages already mine?" on
every insert (a page in two places is the worst accounting bug: two sequences
writing one page), and numpy fancy indexing gives it without a Python loop.
The cache does not know the pool size, so the bitmap grows by doubling.
"""
from __future__ import annotations

import numpy as np


class PageSet:
    """Set of non-negative page ids backed by a bool array."""

    __slots__ = ("_bits", "_count")

    def __init__(self, capacity: int = 1024) -> None:
        self._bits = np.zeros(max(capacity, 1), dtype=bool)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _fit(self, pages: np.ndarray) -> None:
        hi = int(pages.max()) + 1
        if hi > self._bits.size:
            size = self._bits.size
            while size < hi:
                size *= 2
            grown = np.zeros(size, dtype=bool)
            grown[: self._bits.size] = self._bits
            self._bits = grown

    def mask(self, pages: np.ndarray) -> np.ndarray:
        """Bool array: ``pages[i]`` is in the set."""
        out = np.zeros(pages.size, dtype=bool)
        inside = pages < self._bits.size
        out[inside] = self._bits[pages[inside]]
        return out

    def add(self, pages: np.ndarray) -> None:
        """Add pages known to be absent and distinct (the caller checked with ``mask``)."""
        if pages.size:
            self._fit(pages)
            self._bits[pages] = True
            self._count += int(pages.size)

    def remove(self, pages: np.ndarray) -> None:
        """Remove pages known to be present."""
        if pages.size:
            self._bits[pages] = False
            self._count -= int(pages.size)

    def to_array(self) -> np.ndarray:
        """Every member, ascending (for invariant checks)."""
        return np.flatnonzero(self._bits).astype(np.int32)
