"""Pure scheduling policy: the radix prefix cache, page accounting (and, later,
requests and the batching loop). Token ids and page ids only; numpy only; no
import of the server or the engine."""
from .cache_stats import CacheStats, NodeInfo, TreeStats
from .errors import (
    CacheError,
    CacheInputError,
    CacheInvariantError,
    CacheTypeError,
    LockStateError,
    NotCachedError,
    OutOfPages,
    PageOwnershipError,
    StaleMatchError,
)
from .handles import LockHandle, MatchResult
from .page_allocator import PageAllocator
from .radix_cache import RadixCache

__all__ = [
    "CacheError", "CacheInputError", "CacheInvariantError", "CacheStats", "CacheTypeError",
    "LockHandle", "LockStateError", "MatchResult", "NodeInfo", "NotCachedError", "OutOfPages",
    "PageAllocator", "PageOwnershipError", "RadixCache", "StaleMatchError", "TreeStats",
]
