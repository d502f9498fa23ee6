"""A radix cache as plain data: capture a consistent view, trim it, rebuild a tree from it.

A ``CacheImage`` lists the tree's nodes parents first: each node's token run,
the page ids holding it, its last access time and the pins that end exactly at
it. It is what a snapshot stores (the page *data* is the caller's business:
this module never touches the KV store, files or the engine).

Capture locks every node (``RadixCache.lock_tree``) without touching access
times, so the pages it names keep their data until the caller releases the
handles. Restore rebuilds the same nodes with the same relative LRU order by
inserting each node's root path in order of its access time (parents first on
ties): the insert of a path touches every node on it, and a parent is never
older than its children, so each node ends with the time of its last insert.
"""
from __future__ import annotations

import dataclasses
import heapq

import numpy as np

from .errors import CacheInputError
from .handles import LockHandle
from .radix_cache import RadixCache
from .token_arrays import Namespace, check_namespace, frozen_copy


@dataclasses.dataclass(frozen=True, slots=True)
class ImageNode:
    parent: int  # index of the parent in CacheImage.nodes, -1 for a namespace root's child
    namespace: Namespace
    tokens: np.ndarray  # int32 [n_pages * page_size]
    pages: np.ndarray  # int32 [n_pages]: page ids (live ids after capture, new ids before restore)
    last_access: int
    pins: int = 0  # pins whose prefix ends exactly at the end of this node
    uid: int = -1  # the live node's uid, after capture (not stored in a snapshot)

    @property
    def n_pages(self) -> int:
        return int(self.pages.size)


@dataclasses.dataclass(frozen=True, slots=True)
class CacheImage:
    page_size: int
    nodes: tuple[ImageNode, ...]  # parents before children

    @property
    def n_pages(self) -> int:
        return sum(n.n_pages for n in self.nodes)

    @property
    def n_tokens(self) -> int:
        return self.n_pages * self.page_size

    def page_ids(self) -> np.ndarray:
        """Every page id, in node order (a snapshot stores the data in this order)."""
        if not self.nodes:
            return np.empty(0, dtype=np.int32)
        return np.concatenate([n.pages for n in self.nodes]).astype(np.int32, copy=False)

    def with_pages(self, pages: np.ndarray) -> CacheImage:
        """The same tree over other page ids (``pages`` in ``page_ids()`` order)."""
        pages = np.asarray(pages, dtype=np.int32)
        if pages.size != self.n_pages:
            raise CacheInputError(f"with_pages needs {self.n_pages} page ids, got {pages.size}")
        out, at = [], 0
        for n in self.nodes:
            out.append(dataclasses.replace(n, pages=frozen_copy(pages[at:at + n.n_pages])))
            at += n.n_pages
        return CacheImage(self.page_size, tuple(out))

    def path_tokens(self, i: int) -> np.ndarray:
        """Tokens from the namespace root to the end of node i."""
        return np.concatenate([self.nodes[j].tokens for j in self._path(i)])

    def path_pages(self, i: int) -> np.ndarray:
        return np.concatenate([self.nodes[j].pages for j in self._path(i)])

    def _path(self, i: int) -> list[int]:
        path = []
        while i >= 0:
            path.append(i)
            i = self.nodes[i].parent
        return path[::-1]

    def validate(self) -> None:
        """Raise CacheInputError unless ``restore`` would rebuild exactly this tree.

        Checks what a well-formed but wrong image could get past the checksums
        with: parent order, namespaces, whole pages, unique page ids, and
        siblings that differ in their first page (else insert would merge them).
        """
        ps, seen = self.page_size, set()
        for i, n in enumerate(self.nodes):
            check_namespace(n.namespace)
            if not -1 <= n.parent < i:
                raise CacheInputError(f"node {i}: parent {n.parent} does not come before it")
            if n.parent >= 0 and self.nodes[n.parent].namespace != n.namespace:
                raise CacheInputError(f"node {i}: namespace differs from its parent's")
            if n.n_pages < 1 or n.tokens.size != n.n_pages * ps:
                raise CacheInputError(f"node {i}: {n.tokens.size} tokens for {n.n_pages} pages of {ps}")
            if n.tokens.size and int(n.tokens.min()) < 0:
                raise CacheInputError(f"node {i}: a negative token id")
            if n.pins < 0 or n.last_access < 0:
                raise CacheInputError(f"node {i}: negative pin count or access time")
            key = (n.namespace, n.parent, n.tokens[:ps].tobytes())
            if key in seen:
                raise CacheInputError(f"node {i}: two siblings start with the same page")
            seen.add(key)
        ids = self.page_ids()
        if np.unique(ids).size != ids.size or (ids.size and int(ids.min()) < 0):
            raise CacheInputError("a page id is negative or used twice")


def capture(cache: RadixCache, max_pages: int | None = None) -> tuple[CacheImage, list[LockHandle]]:
    """The tree (at most ``max_pages`` pages of it, least recently used leaves
    left out, whole nodes only) and lock handles that keep those pages until
    released; what is left out stays evictable, so a save can leave the
    scheduler room to run. Run it on the thread that owns the cache; read the
    pages anywhere until the handles are released (on that thread).
    Mutates: lock counts only.
    """
    infos = cache.dump_tree(detail=True)
    index = {info.uid: i for i, info in enumerate(infos)}
    child_pins = [0] * len(infos)
    for info in infos:
        if info.parent_uid is not None:
            child_pins[index[info.parent_uid]] += info.pin_ref
    nodes = tuple(
        ImageNode(parent=-1 if info.parent_uid is None else index[info.parent_uid],
                  namespace=info.namespace, tokens=np.asarray(info.tokens, dtype=np.int32),
                  pages=np.asarray(info.pages, dtype=np.int32), last_access=info.last_access,
                  pins=info.pin_ref - child_pins[i], uid=info.uid)
        for i, info in enumerate(infos))
    image = CacheImage(cache.page_size, nodes)
    if max_pages is not None:
        image = trim(image, max_pages, whole_nodes=True)
    parents = {n.parent for n in image.nodes}
    leaves = [n.uid for i, n in enumerate(image.nodes) if i not in parents]
    return image, cache.lock_nodes(leaves)


def trim(image: CacheImage, max_pages: int, *, whole_nodes: bool = False) -> CacheImage:
    """At most ``max_pages`` pages: drop leaves least recently used first, a leaf's
    tail pages first, as ``RadixCache.evict`` would (``whole_nodes``: a leaf goes
    entirely or not at all); pinned prefixes go last. A node that loses pages
    loses the pins that end at it."""
    if image.n_pages <= max(max_pages, 0):
        return image
    nodes = list(image.nodes)
    keep = [n.n_pages for n in nodes]
    children = [0] * len(nodes)
    pinned = [n.pins > 0 for n in nodes]
    for i in range(len(nodes) - 1, -1, -1):  # children come after parents: a reverse pass sums subtrees
        p = nodes[i].parent
        if p >= 0:
            children[p] += 1
            pinned[p] = pinned[p] or pinned[i]
    heap = [(pinned[i], n.last_access, i) for i, n in enumerate(nodes) if children[i] == 0]
    heapq.heapify(heap)
    excess = image.n_pages - max_pages
    while excess > 0:
        _, _, i = heapq.heappop(heap)
        drop = keep[i] if whole_nodes else min(excess, keep[i])
        keep[i] -= drop
        excess -= drop
        if keep[i] == 0 and (p := nodes[i].parent) >= 0:
            children[p] -= 1
            if children[p] == 0:
                heapq.heappush(heap, (pinned[p], nodes[p].last_access, p))
    return _cut(image, keep)


def _cut(image: CacheImage, keep: list[int]) -> CacheImage:
    """Keep the first ``keep[i]`` pages of node i; renumber parents."""
    ps, new_index, out = image.page_size, {}, []
    for i, n in enumerate(image.nodes):
        k = keep[i]
        if k == 0:
            continue
        new_index[i] = len(out)
        out.append(dataclasses.replace(
            n, parent=-1 if n.parent < 0 else new_index[n.parent],
            tokens=n.tokens[: k * ps], pages=n.pages[:k], pins=n.pins if k == n.n_pages else 0))
    return CacheImage(ps, tuple(out))


def restore(cache: RadixCache, image: CacheImage, *, pins: bool = True) -> int:
    """Insert the image's nodes into an empty cache and take its pins (unless
    ``pins`` is False: a server re-pins what its configuration says).

    The pages must already hold their data and be private to the caller, who
    hands them to the tree. All or nothing: the image is validated first, and
    should an insert still fail, everything restored so far is taken out again
    (the caller frees all its pages) before the error propagates.
    Returns the number of pages now in the tree. Mutates: the tree.
    """
    if image.page_size != cache.page_size:
        raise CacheInputError(f"image page_size {image.page_size} != cache page_size {cache.page_size}")
    image.validate()
    if cache.stats().nodes:
        raise CacheInputError("restore needs an empty cache")
    depth = [0] * len(image.nodes)
    for i, n in enumerate(image.nodes):
        depth[i] = 0 if n.parent < 0 else depth[n.parent] + 1
    order = sorted(range(len(image.nodes)), key=lambda i: (image.nodes[i].last_access, depth[i]))
    taken: list[tuple[np.ndarray, Namespace]] = []
    try:
        for i in order:
            n = image.nodes[i]
            path = image.path_tokens(i)
            dups = cache.insert(path, image.path_pages(i), n.namespace)
            if dups.size:
                raise CacheInputError(f"node {i}: {dups.size} of its pages duplicate a cached prefix")
            for _ in range(n.pins if pins else 0):  # at once: a pin touches the path like an insert
                cache.pin(path, n.namespace)
                taken.append((path, n.namespace))
    except BaseException:
        for path, ns in taken:
            cache.unpin(path, ns)
        cache.evict(cache.in_tree_pages)
        raise
    return image.n_pages
