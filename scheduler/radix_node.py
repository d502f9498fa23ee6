"""A node of the radix tree: an edge carrying a run of whole pages.

::

    root ─[t0..t47 | p3 p4 p5]─ A ─[t48..t63 | p9]─ B      (page_size = 16)
                                  └[t48..t79 | p12 p13]─ C

A node's ``tokens`` are ``n_pages * page_size`` ids and ``pages`` the KV page
ids holding them. The tokens are kept as ``bytes`` (``raw``) with ``tokens`` a
read-only int32 view of them, because the hot comparison in a match is
``query_bytes.startswith(node.raw, offset)``: a memcmp with no copy and no
numpy call per node; ``end`` is the prefix length (in tokens) from the root to the
end of the node. Children are keyed by the bytes of their first page of tokens,
so siblings always differ within their first page and a lookup is one dict hit.

``lock_ref`` / ``pin_ref`` count the lock handles and pins held on this node or
on any descendant (a lock protects the whole path from the root), so "protected"
is a per-node fact and never needs a subtree walk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True, eq=False)
class Node:
    """One edge of the tree. Identity matters (``eq=False``): handles point at nodes."""

    uid: int
    raw: bytes  # the token run, int32 native byte order
    tokens: np.ndarray  # int32 [n_pages * page_size], a read-only view of raw
    pages: np.ndarray  # int32 [n_pages], read-only
    parent: Node | None  # None only for a namespace root
    end: int  # tokens from the root to the end of this node
    last_access: int  # the cache's logical clock at the last match/insert/pin through it
    children: dict[bytes, Node] = field(default_factory=dict)
    lock_ref: int = 0
    pin_ref: int = 0
    alive: bool = True  # False once evicted: stale match results are refused

    @property
    def n_pages(self) -> int:
        return int(self.pages.size)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def protected(self) -> bool:
        """Locked by a request or pinned by the server: never evicted."""
        return self.lock_ref > 0 or self.pin_ref > 0

    @property
    def evictable_leaf(self) -> bool:
        return self.parent is not None and not self.children and not self.protected

    def set_run(self, raw: bytes, pages: np.ndarray) -> None:
        """Replace the node's token run (a split or a truncation) keeping ``tokens`` a view of ``raw``."""
        self.raw = raw
        self.tokens = np.frombuffer(raw, dtype=np.int32)
        self.pages = pages

    def path_to_root(self) -> list[Node]:
        """This node and its ancestors, deepest first, excluding the root."""
        out: list[Node] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            out.append(node)
            node = node.parent
        return out


def make_node(uid: int, raw: bytes, pages: np.ndarray, parent: Node | None, end: int,
              last_access: int, lock_ref: int = 0, pin_ref: int = 0) -> Node:
    """A node whose ``tokens`` is a view of ``raw`` (``pages`` must already be read-only)."""
    return Node(uid=uid, raw=raw, tokens=np.frombuffer(raw, dtype=np.int32), pages=pages,
                parent=parent, end=end, last_access=last_access, lock_ref=lock_ref, pin_ref=pin_ref)


def make_root(uid: int) -> Node:
    empty = np.empty(0, dtype=np.int32)
    empty.flags.writeable = False
    return make_node(uid, b"", empty, parent=None, end=0, last_access=0)
