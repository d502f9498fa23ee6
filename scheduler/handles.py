"""What ``match`` and ``lock`` hand out.

A ``MatchResult`` is a value: the cached prefix's page ids and length, plus a
reference to the node where the match ended. It does not protect anything; a
caller that wants the pages to stay must ``lock`` it before anything else can
evict (the scheduler does so at once, on the same thread).

A ``LockHandle`` is the only way to release a lock, so a lock cannot be dropped
twice or released by the wrong request. Use it as a context manager for a
temporary lock::

    with cache.lock(cache.match(prompt)) as h:
        ...  # the prefix cannot be evicted here
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .radix_node import Node
from .token_arrays import Namespace

if TYPE_CHECKING:
    from .radix_cache import RadixCache


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The longest cached page-aligned prefix of a query."""

    pages: np.ndarray  # int32 [n_tokens // page_size], the prefix's page ids in order
    n_tokens: int  # page-aligned number of query tokens served from the cache
    namespace: Namespace
    node: Node = field(repr=False)  # where the match ends (a namespace root when empty)

    @property
    def n_pages(self) -> int:
        return int(self.pages.size)


@dataclass(slots=True, eq=False)
class LockHandle:
    """A held lock on a matched prefix; release with ``cache.unlock(h)`` or ``h.release()``."""

    cache: RadixCache = field(repr=False)
    node: Node = field(repr=False)
    uid: int
    n_tokens: int
    active: bool = True

    def release(self) -> None:
        self.cache.unlock(self)

    def __enter__(self) -> LockHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self.cache.unlock(self)
