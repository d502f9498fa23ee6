"""The on-disk layout of a prefix-cache snapshot (see snapshot_file.py for reading and writing).

::

    0            prefix: magic "RSXKVSNP", u32 version, u32 header_len, u32 crc32(header)
    20           header: msgpack map (model identity, page geometry, counts, tree_len, tree_crc)
    20+H         tree:   msgpack map {"nodes": [[parent, namespace, tokens, n_pages, last_access, pins], ...]}
    data_offset  pages:  n_pages x page_bytes, raw engine bytes, in node order    (data_offset: 4 KiB aligned)
    +P           crcs:   n_pages x u32 little-endian, crc32 of each page block
    +4P          end:    "RSXKVEND"

All integers are little-endian; ``tokens`` is int32 little-endian bytes. A
node's pages are implicit: node i owns the next ``n_pages`` page blocks. The
whole size follows from the header, so a truncated file is refused before
anything is read past it.
"""
from __future__ import annotations

import dataclasses
import struct
import sys
import zlib
from typing import Any

import msgpack
import numpy as np

from scheduler.cache_image import CacheImage, ImageNode

MAGIC = b"RSXKVSNP"
END = b"RSXKVEND"
VERSION = 1
PREFIX = struct.Struct("<8sIII")
DATA_ALIGN = 4096
MAX_HEADER = 1 << 20


class SnapshotRefused(Exception):
    """This snapshot cannot be loaded here; ``str(e)`` says why in one line."""


@dataclasses.dataclass(frozen=True, slots=True)
class Geometry:
    """What a KV page's bytes mean: a snapshot's pages only fit a store with the same geometry."""

    page_size: int
    kv_dtype: str
    n_layer: int
    n_head_kv: int
    head_dim: int
    page_bytes: int  # last: a difference in any field above shows here too; name that one first
    byteorder: str = sys.byteorder

    @classmethod
    def of(cls, model: Any, kv: Any) -> Geometry:
        hp = model.hparams
        return cls(page_size=kv.page_size, kv_dtype=kv.dtype, n_layer=hp.n_layer, n_head_kv=hp.n_head_kv,
                   head_dim=hp.head_dim, page_bytes=kv.page_bytes)

    def mismatch(self, other: Geometry) -> str | None:
        """A one-line description of the first difference, or None."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                return f"{f.name} {theirs!r} in the snapshot, {mine!r} here"
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    model_identity: str
    model_file: str
    geometry: Geometry
    n_nodes: int
    n_pages: int
    tree_len: int
    tree_crc: int
    created: float
    header_len: int = 0  # set when decoded

    def data_offset(self) -> int:
        end = PREFIX.size + self.header_len + self.tree_len
        return -(-end // DATA_ALIGN) * DATA_ALIGN

    def crc_offset(self) -> int:
        return self.data_offset() + self.n_pages * self.geometry.page_bytes

    def file_size(self) -> int:
        return self.crc_offset() + 4 * self.n_pages + len(END)


def encode_header(h: Header) -> bytes:
    """The prefix and the header, with header_len filled in."""
    body = msgpack.packb({
        "model": {"identity": h.model_identity, "file": h.model_file},
        "geometry": dataclasses.asdict(h.geometry),
        "n_nodes": h.n_nodes, "n_pages": h.n_pages, "tree_len": h.tree_len, "tree_crc": h.tree_crc,
        "created": h.created,
    }, use_bin_type=True)
    return PREFIX.pack(MAGIC, VERSION, len(body), zlib.crc32(body)) + body


def decode_prefix(raw: bytes) -> tuple[int, int]:
    """(header_len, header_crc) from the first PREFIX.size bytes; refuses another format or version."""
    if len(raw) < PREFIX.size:
        raise SnapshotRefused(f"truncated: {len(raw)} bytes, not even the {PREFIX.size}-byte prefix")
    magic, version, header_len, header_crc = PREFIX.unpack(raw[:PREFIX.size])
    if magic != MAGIC:
        raise SnapshotRefused("not a radixserve cache snapshot (bad magic)")
    if version != VERSION:
        raise SnapshotRefused(f"snapshot format version {version}; this server reads version {VERSION}")
    if header_len > MAX_HEADER:
        raise SnapshotRefused(f"header of {header_len} bytes is implausible")
    return header_len, header_crc


def decode_header(body: bytes, header_crc: int) -> Header:
    if zlib.crc32(body) != header_crc:
        raise SnapshotRefused("header checksum mismatch")
    try:
        d = msgpack.unpackb(body, raw=False)
        geometry = Geometry(**d["geometry"])
        h = Header(str(d["model"]["identity"]), str(d["model"]["file"]), geometry, int(d["n_nodes"]),
                   int(d["n_pages"]), int(d["tree_len"]), int(d["tree_crc"]), float(d["created"]),
                   header_len=len(body))
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        raise SnapshotRefused(f"malformed header: {type(e).__name__}: {e}") from None
    if min(h.n_nodes, h.n_pages, h.tree_len, h.geometry.page_bytes, h.geometry.page_size) < 0:
        raise SnapshotRefused("malformed header: a negative count")
    return h


def encode_tree(image: CacheImage) -> bytes:
    """The nodes, parents first; page ids are not stored (the data blocks follow node order)."""
    nodes = [[n.parent, n.namespace, n.tokens.astype("<i4").tobytes(), n.n_pages, n.last_access, n.pins]
             for n in image.nodes]
    return msgpack.packb({"nodes": nodes}, use_bin_type=True)


def decode_tree(raw: bytes, header: Header) -> CacheImage:
    """The image whose page ids are the page blocks' indices in the file (0, 1, ...)."""
    if zlib.crc32(raw) != header.tree_crc:
        raise SnapshotRefused("tree checksum mismatch")
    ps, out, at = header.geometry.page_size, [], 0
    try:
        d = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        for parent, ns, tokens, n_pages, last_access, pins in d["nodes"]:
            if not isinstance(tokens, bytes) or not isinstance(n_pages, int) or n_pages < 1:
                raise ValueError("bad node record")
            toks = np.frombuffer(tokens, dtype="<i4").astype(np.int32)
            out.append(ImageNode(int(parent), ns, toks, np.arange(at, at + n_pages, dtype=np.int32),
                                 int(last_access), int(pins)))
            at += n_pages
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        raise SnapshotRefused(f"malformed tree: {type(e).__name__}: {e}") from None
    if len(out) != header.n_nodes or at != header.n_pages:
        raise SnapshotRefused(f"malformed tree: {len(out)} nodes and {at} pages, "
                              f"the header says {header.n_nodes} and {header.n_pages}")
    image = CacheImage(ps, tuple(out))
    try:
        image.validate()
    except (ValueError, TypeError) as e:
        raise SnapshotRefused(f"malformed tree: {e}") from None
    return image
