"""The radix prefix cache: token prefixes -> KV page ids, every prefix stored once.

Pure policy: token ids in, page ids and lock handles out. The tree never frees
a page itself; ``insert`` returns the caller's duplicate pages and ``evict``
returns the pages it dropped, and the caller gives both back to the
``PageAllocator``.

Granularity is the page: a node's run is whole pages, a match is rounded down
to a page boundary (a partial last page is never shared), and nodes split only
at page boundaries. A split keeps the *old* node object as the suffix and puts
a new node above it, so a match result, lock handle or pin that points at a
node still names the same end of prefix after any later split.

Recency is a logical clock bumped once per ``match``, ``insert`` and ``pin``;
every node on the path an operation walks gets that time. Hence a parent is
never older than its children, and eviction (oldest evictable leaf first, its
pages tail first) removes exactly what the page-by-page LRU model would.
"""
from __future__ import annotations

import numpy as np

from .cache_stats import NodeInfo, TreeCounters, TreeStats
from .errors import (
    CacheInputError,
    CacheTypeError,
    LockStateError,
    NotCachedError,
    PageOwnershipError,
    StaleMatchError,
)
from .handles import LockHandle, MatchResult
from .lru import LeafLRU
from .page_set import PageSet
from .radix_node import Node, make_node, make_root
from .token_arrays import Namespace, as_id_array, check_count, check_namespace, frozen_copy
from .tree_audit import audit_tree

_EMPTY = np.empty(0, dtype=np.int32)
_EMPTY.flags.writeable = False  # shared, so immutable; results hand out copies


class RadixCache:
    """Radix tree over token ids whose nodes own KV page ids (see DESIGN.md)."""

    __slots__ = ("page_size", "_roots", "_clock", "_next_uid", "_lru", "_owned",
                 "_locks", "_pins", "_counters")

    def __init__(self, page_size: int = 16) -> None:
        if isinstance(page_size, bool) or not isinstance(page_size, int):
            raise CacheTypeError(f"page_size must be an int, got {type(page_size).__name__}")
        if page_size < 1:
            raise CacheInputError(f"page_size must be >= 1, got {page_size}")
        self.page_size = page_size
        self._roots: dict[Namespace, Node] = {}
        self._clock = 0
        self._next_uid = 1
        self._lru: LeafLRU[Node] = LeafLRU()
        self._owned = PageSet()
        self._locks: dict[int, LockHandle] = {}
        self._pins: dict[tuple[Namespace, bytes], tuple[Node, int]] = {}
        self._counters = TreeCounters()

    # ------------------------------------------------------------------ queries

    @property
    def evictable_pages(self) -> int:
        """Pages ``evict`` could free now (in the tree, neither locked nor pinned)."""
        return self._counters.in_tree_pages - self._counters.protected_pages

    @property
    def in_tree_pages(self) -> int:
        return self._counters.in_tree_pages

    def owns_mask(self, pages: np.ndarray) -> np.ndarray:
        """Bool per page id: does the tree own it? (The allocator refuses to free those.)"""
        return self._owned.mask(as_id_array(pages, "pages"))

    def stats(self) -> TreeStats:
        """Exact counts, O(1). ``PageAllocator.stats()`` adds total/free/held."""
        return TreeStats.from_counters(self._counters, len(self._locks), len(self._pins))

    # ------------------------------------------------------------------ match

    def match(self, tokens: object, namespace: Namespace = None, *, count: bool = True) -> MatchResult:
        """Longest cached page-aligned prefix of ``tokens``.

        Mutates: the clock, the access time of every node on the matched path,
        the query/hit counters (unless ``count`` is False: a caller re-matching
        what it just inserted is not a cache query), and splits the last node
        when the match ends inside it (so a lock covers exactly the matched pages).
        """
        q = as_id_array(tokens, "tokens")
        root_ns = check_namespace(namespace)
        root = self._root(root_ns)
        self._clock += 1
        path, n_tokens = self._descend(root, q)
        path = self._commit_path(path, n_tokens)
        if count:
            self._counters.query_tokens += int(q.size)
            self._counters.hit_tokens += n_tokens
        pages = np.concatenate([n.pages for n in path]) if path else _EMPTY.copy()
        return MatchResult(pages=pages, n_tokens=n_tokens, namespace=root_ns,
                           node=path[-1] if path else root)

    def peek(self, tokens: object, namespace: Namespace = None) -> int:
        """Page-aligned length of the cached prefix of ``tokens``, changing
        nothing (no access time, no split, no counters): for ordering a queue."""
        q = as_id_array(tokens, "tokens")
        root = self._roots.get(check_namespace(namespace))
        return 0 if root is None else self._descend(root, q)[1]

    def _descend(self, root: Node, q: np.ndarray) -> tuple[list[Node], int]:
        """Walk down without changing anything. Returns the nodes the match enters
        (the last may be entered only partly) and the matched, page-aligned length.

        Whole nodes are compared as bytes (``startswith`` at an offset: a memcmp,
        no copy); numpy finds the first differing token only in the one node where
        the query diverges or ends.
        """
        ps, width = self.page_size, q.itemsize
        limit = q.size - q.size % ps
        qb = q.tobytes()
        node, pos, path = root, 0, []
        while pos < limit:
            child = node.children.get(qb[pos * width:(pos + ps) * width])
            if child is None:
                break
            n = child.tokens.size
            if pos + n <= limit and qb.startswith(child.raw, pos * width):
                same = n
            else:
                span = min(n, limit - pos)
                eq = child.tokens[:span] == q[pos:pos + span]
                same = span if eq.all() else int(np.argmin(eq)) // ps * ps
            path.append(child)
            pos += same
            if same < n:
                break
            node = child
        return path, pos

    def _commit_path(self, path: list[Node], n_tokens: int) -> list[Node]:
        """Split the last node at ``n_tokens`` if the walk ended inside it, then touch the path."""
        if path and path[-1].end > n_tokens:
            last = path[-1]
            path[-1] = self._split(last, last.tokens.size - (last.end - n_tokens))
        clock, lru = self._clock, self._lru
        for node in path:
            node.last_access = clock
            if node.uid in lru:
                lru.add(node.uid, clock, node)
        return path

    def _split(self, node: Node, k: int) -> Node:
        """Put a new node holding ``node``'s first ``k`` tokens above it; return the new node.

        ``node`` keeps its identity as the suffix (handles stay valid) and the new
        parent inherits its lock and pin counts (it is on every path through ``node``).
        """
        kp, cut = k // self.page_size, k * node.tokens.itemsize
        parent = node.parent
        assert parent is not None and 0 < k < node.tokens.size and k % self.page_size == 0
        head = make_node(self._new_uid(), node.raw[:cut], node.pages[:kp], parent,
                         end=node.end - node.tokens.size + k, last_access=node.last_access,
                         lock_ref=node.lock_ref, pin_ref=node.pin_ref)
        parent.children[self._key(head)] = head
        node.set_run(node.raw[cut:], node.pages[kp:])
        node.parent = head
        head.children[self._key(node)] = node
        self._counters.nodes += 1
        return head

    # ------------------------------------------------------------------ insert

    def insert(self, tokens: object, pages: object, namespace: Namespace = None) -> np.ndarray:
        """Add a sequence's full pages; return the caller's pages that duplicate cached ones.

        ``pages[i]`` holds tokens ``[i*ps, (i+1)*ps)``; there must be exactly
        ``len(tokens) // page_size`` of them (a trailing partial page stays the
        caller's). Where the tree already holds a prefix, the caller's page for
        those positions is returned for freeing, unless it *is* the tree's page
        (a request that locked its matched prefix passes those back unchanged).
        Raises before changing anything when a page would end up in two places.
        Mutates: the clock, access times on the path, a split, one new leaf.
        """
        q = as_id_array(tokens, "tokens")
        p = as_id_array(pages, "pages")
        ns = check_namespace(namespace)
        n_full = q.size // self.page_size
        if p.size != n_full:
            raise CacheInputError(
                f"ragged pages: {q.size} tokens make {n_full} full pages of {self.page_size}, "
                f"got {p.size} page ids (pass only full pages; keep the partial one)")
        q = q[: n_full * self.page_size]
        if np.unique(p).size != p.size:
            raise PageOwnershipError("pages holds the same page id twice")
        root = self._root(ns)
        path, n_cached = self._descend(root, q)
        k = n_cached // self.page_size
        tree_pages = np.concatenate([n.pages for n in path])[:k] if path else _EMPTY
        dups = p[:k][p[:k] != tree_pages]
        fresh = p[k:]
        owned = self._owned.mask(np.concatenate([dups, fresh]))
        if owned.any():
            bad = int(np.concatenate([dups, fresh])[owned][0])
            raise PageOwnershipError(f"page {bad} is already in the radix tree at another position")
        self._clock += 1
        path = self._commit_path(path, n_cached)
        if fresh.size:
            self._add_leaf(path[-1] if path else root, q[n_cached:], fresh)
        self._counters.insert_dedup_pages += int(dups.size)
        return dups.copy()

    def _add_leaf(self, parent: Node, tokens: np.ndarray, pages: np.ndarray) -> Node:
        leaf = make_node(self._new_uid(), tokens.tobytes(), frozen_copy(pages), parent,
                         end=parent.end + tokens.size, last_access=self._clock)
        self._lru.discard(parent.uid)  # it has a child now
        parent.children[self._key(leaf)] = leaf
        self._lru.add(leaf.uid, leaf.last_access, leaf)
        self._owned.add(leaf.pages)
        self._counters.nodes += 1
        self._counters.in_tree_pages += leaf.n_pages
        return leaf

    # ------------------------------------------------------------------ locks and pins

    def lock(self, match: MatchResult) -> LockHandle:
        """Protect a matched prefix from eviction until the handle is released.

        Raises StaleMatchError if the tree dropped or shortened the matched node
        since the match. Mutates: lock counts on the path, the evictable set.
        """
        if not isinstance(match, MatchResult):
            raise CacheTypeError(f"lock takes a MatchResult, got {type(match).__name__}")
        node = match.node
        if self._roots.get(match.namespace) is not self._root_of(node):
            raise LockStateError("this match result comes from another cache")
        if not node.alive or node.end != match.n_tokens:
            raise StaleMatchError(
                "the matched prefix was evicted or shortened since match(); match again and lock at once")
        self._add_refs(node, lock=1, pin=0)
        handle = LockHandle(cache=self, node=node, uid=self._new_uid(), n_tokens=match.n_tokens)
        self._locks[handle.uid] = handle
        return handle

    def lock_nodes(self, uids: object) -> list[LockHandle]:
        """Lock the nodes with these uids (from ``dump_tree``), and so their ancestors.

        For a snapshot: unlike match-then-lock this changes no access time and
        no counter, so saving the cache does not disturb its LRU order; until
        the handles are released none of those pages is evicted, so they keep
        their data. Uids no longer in the tree raise StaleMatchError before
        anything is locked. Mutates: lock counts, the evictable set.
        """
        want = set(uids)  # type: ignore[call-overload]
        found: list[tuple[Namespace, Node]] = []
        for ns, root in self._roots.items():
            stack = list(root.children.values())
            while stack:
                n = stack.pop()
                stack.extend(n.children.values())
                if n.uid in want:
                    found.append((ns, n))
        if len(found) != len(want):
            raise StaleMatchError(f"{len(want) - len(found)} of the nodes to lock are no longer in the tree")
        return [self.lock(MatchResult(n.pages, n.end, ns, n)) for ns, n in found]

    def unlock(self, handle: LockHandle) -> None:
        """Release a lock handle (exactly once). Mutates: lock counts, the evictable set."""
        if not isinstance(handle, LockHandle):
            raise CacheTypeError(f"unlock takes a LockHandle, got {type(handle).__name__}")
        if self._locks.get(handle.uid) is not handle:
            raise LockStateError("lock handle already released or not from this cache")
        del self._locks[handle.uid]
        handle.active = False
        self._add_refs(handle.node, lock=-1, pin=0)

    def pin(self, tokens: object, namespace: Namespace = None) -> int:
        """Keep the page-aligned prefix of ``tokens`` resident until ``unpin``; return its length.

        The whole prefix must already be cached (insert it first). Pins count:
        pinning twice needs two unpins. Mutates: like a match, plus pin counts.
        """
        q = as_id_array(tokens, "tokens")
        ns = check_namespace(namespace)
        n = q.size - q.size % self.page_size
        if n == 0:
            raise CacheInputError(f"pin needs at least one full page ({self.page_size} tokens)")
        root = self._root(ns)
        path, n_cached = self._descend(root, q[:n])
        if n_cached < n:
            raise NotCachedError(f"only {n_cached} of the {n} page-aligned tokens are cached; insert first")
        self._clock += 1
        node = self._commit_path(path, n_cached)[-1]
        key = (ns, q[:n].tobytes())
        _, count = self._pins.get(key, (node, 0))
        self._pins[key] = (node, count + 1)
        self._add_refs(node, lock=0, pin=1)
        return n

    def unpin(self, tokens: object, namespace: Namespace = None) -> None:
        """Drop one pin taken by ``pin`` with the same tokens and namespace."""
        q = as_id_array(tokens, "tokens")
        ns = check_namespace(namespace)
        key = (ns, q[: q.size - q.size % self.page_size].tobytes())
        if key not in self._pins:
            raise NotCachedError("unpin of a prefix that is not pinned")
        node, count = self._pins[key]
        if count == 1:
            del self._pins[key]
        else:
            self._pins[key] = (node, count - 1)
        self._add_refs(node, lock=0, pin=-1)

    def _add_refs(self, node: Node, lock: int, pin: int) -> None:
        """Add to the lock or pin count of ``node`` and its ancestors, keeping the
        page counters and the evictable set in step with each 0 <-> 1 transition."""
        c = self._counters
        for n in node.path_to_root():
            was_locked, was_pinned, was_protected = n.lock_ref > 0, n.pin_ref > 0, n.protected
            n.lock_ref += lock
            n.pin_ref += pin
            c.locked_pages += n.n_pages * ((n.lock_ref > 0) - was_locked)
            c.pinned_pages += n.n_pages * ((n.pin_ref > 0) - was_pinned)
            if n.protected and not was_protected:
                c.protected_pages += n.n_pages
                self._lru.discard(n.uid)
            elif was_protected and not n.protected:
                c.protected_pages -= n.n_pages
                if n.is_leaf:
                    self._lru.add(n.uid, n.last_access, n)

    # ------------------------------------------------------------------ evict

    def evict(self, n_pages: object) -> np.ndarray:
        """Free up to ``n_pages`` pages from unprotected leaves, least recently used first.

        Returns exactly the page ids dropped from the tree (deepest page first); fewer
        than asked only when nothing else is evictable. A leaf larger than the rest
        of the need loses only its tail pages. Evicting a leaf's last page may make
        its parent an evictable leaf, which then competes with its own access time.
        """
        need = check_count(n_pages, "n_pages")
        freed: list[np.ndarray] = []
        while need > 0:
            leaf = self._lru.pop_oldest()
            if leaf is None:
                break
            if leaf.n_pages > need:
                freed.append(self._truncate(leaf, need))
                need = 0
            else:
                freed.append(self._remove_leaf(leaf))
                need -= freed[-1].size
        out = np.concatenate(freed) if freed else _EMPTY.copy()
        self._owned.remove(out)
        self._counters.in_tree_pages -= out.size
        self._counters.evicted_pages += out.size
        return out

    def _truncate(self, leaf: Node, k: int) -> np.ndarray:
        """Drop the last ``k`` pages of an evictable leaf; it stays a leaf with its time."""
        cut = leaf.n_pages - k
        dropped = leaf.pages[cut:][::-1].copy()
        leaf.set_run(leaf.raw[: cut * self.page_size * leaf.tokens.itemsize], leaf.pages[:cut].copy())
        leaf.pages.flags.writeable = False
        leaf.end -= k * self.page_size
        self._lru.add(leaf.uid, leaf.last_access, leaf)
        return dropped

    def _remove_leaf(self, leaf: Node) -> np.ndarray:
        parent = leaf.parent
        assert parent is not None
        del parent.children[self._key(leaf)]
        leaf.alive = False
        self._counters.nodes -= 1
        if parent.evictable_leaf:
            self._lru.add(parent.uid, parent.last_access, parent)
        return leaf.pages[::-1].copy()

    # ------------------------------------------------------------------ introspection

    def dump_tree(self, detail: bool = False) -> list[NodeInfo]:
        """Every node, parents before children (namespaces in creation order).

        For ``GET /v1/cache`` and debugging; ``detail`` adds page ids and tokens.
        Changes nothing.
        """
        out: list[NodeInfo] = []
        for ns, root in self._roots.items():
            stack = list(reversed(root.children.values()))
            while stack:
                n = stack.pop()
                out.append(NodeInfo(
                    uid=n.uid, parent_uid=None if n.parent is root else n.parent.uid,
                    namespace=ns, depth_tokens=n.end, n_tokens=int(n.tokens.size),
                    n_pages=n.n_pages, lock_ref=n.lock_ref, pin_ref=n.pin_ref,
                    last_access=n.last_access, evictable_leaf=n.evictable_leaf,
                    pages=tuple(n.pages.tolist()) if detail else None,
                    tokens=tuple(n.tokens.tolist()) if detail else None))
                stack.extend(reversed(n.children.values()))
        return out

    def check_invariants(self) -> None:
        """Recount everything from scratch and raise CacheInvariantError on any mismatch."""
        audit_tree(roots=self._roots, page_size=self.page_size, clock=self._clock,
                   counters=self._counters, lru=self._lru, owned=self._owned,
                   locks=self._locks, pins=self._pins)

    # ------------------------------------------------------------------ helpers

    def _root(self, ns: Namespace) -> Node:
        root = self._roots.get(ns)
        if root is None:
            root = self._roots[ns] = make_root(self._new_uid())
        return root

    @staticmethod
    def _root_of(node: Node) -> Node:
        while node.parent is not None:
            node = node.parent
        return node

    def _key(self, node: Node) -> bytes:
        """A child's key in its parent: the bytes of its first page of tokens."""
        return node.raw[: self.page_size * node.tokens.itemsize]

    def _new_uid(self) -> int:
        self._next_uid += 1
        return self._next_uid
