"""Write a snapshot atomically; open one and check it before anything is loaded.

Writing goes to a temporary file in the target's directory, is fsynced, then
renamed over the target (and the directory fsynced): a crash or a kill at any
moment leaves either the previous snapshot or the new one, never a mix.

Opening checks, in order, everything that can be checked without reading page
data: magic, version, header checksum, model identity, page geometry, the
exact file size (a truncated file is refused here), the end marker, the tree's
checksum and structure. Each page block's checksum is checked as it is read.
"""
from __future__ import annotations

import dataclasses
import os
import time
import uuid
import zlib
from collections.abc import Callable

import numpy as np

from scheduler.cache_image import CacheImage

from .snapshot_format import (END, PREFIX, Geometry, Header, SnapshotRefused, decode_header, decode_prefix,
                              decode_tree, encode_header, encode_tree)

_WRITE_BUFFER = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class WriteReport:
    path: str
    bytes: int
    nodes: int
    pages: int
    tokens: int
    seconds: float


def write_snapshot(path: str | os.PathLike[str], image: CacheImage, *, model_identity: str, model_file: str,
                   geometry: Geometry, read_page: Callable[[int], np.ndarray]) -> WriteReport:
    """Write ``image`` and its pages (``read_page(id)`` -> page bytes) to ``path``, atomically.

    The pages must not change while this runs (the caller holds locks on them).
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    t0 = time.perf_counter()
    path = os.fspath(path)
    tree = encode_tree(image)
    header = Header(model_identity, model_file, geometry, len(image.nodes), image.n_pages, len(tree),
                    zlib.crc32(tree), time.time())
    head = encode_header(header)
    header = dataclasses.replace(header, header_len=len(head) - PREFIX.size)
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb", buffering=_WRITE_BUFFER) as f:
            f.write(head)
            f.write(tree)
            f.write(b"\0" * (header.data_offset() - f.tell()))
            crcs = np.empty(image.n_pages, dtype="<u4")
            for i, page in enumerate(image.page_ids()):
                data = read_page(int(page))
                if data.nbytes != geometry.page_bytes:
                    raise ValueError(f"page {page} is {data.nbytes} bytes, expected {geometry.page_bytes}")
                crcs[i] = zlib.crc32(data)
                f.write(data)
            f.write(crcs.tobytes())
            f.write(END)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(path) or ".")
    return WriteReport(path, header.file_size(), len(image.nodes), image.n_pages, image.n_tokens,
                       time.perf_counter() - t0)


def _fsync_dir(d: str) -> None:
    """Make the rename itself durable (not supported everywhere: best effort)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Snapshot:
    """An opened, checked snapshot: its header, its tree (page ids = block indices), its page blocks."""

    def __init__(self, path: str | os.PathLike[str], *, model_identity: str, geometry: Geometry) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self.header = self._check(model_identity, geometry)
            tree = self._pread(self.header.tree_len, PREFIX.size + self.header.header_len)
            self.image = decode_tree(tree, self.header)
            crcs = self._pread(4 * self.header.n_pages, self.header.crc_offset())
            self._crcs = np.frombuffer(crcs, dtype="<u4")
        except BaseException:
            os.close(self._fd)
            raise

    def _check(self, model_identity: str, geometry: Geometry) -> Header:
        size = os.fstat(self._fd).st_size
        header_len, header_crc = decode_prefix(os.pread(self._fd, PREFIX.size, 0))
        if size < PREFIX.size + header_len:
            raise SnapshotRefused(f"truncated: {size} bytes, the header alone needs {PREFIX.size + header_len}")
        h = decode_header(os.pread(self._fd, header_len, PREFIX.size), header_crc)
        if h.model_identity != model_identity:
            raise SnapshotRefused(f"snapshot of another model ({h.model_file}, identity "
                                  f"{h.model_identity[:12]}), this server runs identity {model_identity[:12]}")
        diff = geometry.mismatch(h.geometry)
        if diff is not None:
            raise SnapshotRefused(f"another page geometry: {diff}")
        if size != h.file_size():
            what = "truncated" if size < h.file_size() else "trailing bytes"
            raise SnapshotRefused(f"{what}: the file has {size} bytes, its header says {h.file_size()}")
        if os.pread(self._fd, len(END), size - len(END)) != END:
            raise SnapshotRefused("bad end marker")
        return h

    def _pread(self, n: int, offset: int) -> bytes:
        raw = os.pread(self._fd, n, offset)
        if len(raw) != n:
            raise SnapshotRefused(f"truncated at offset {offset}")
        return raw

    def read_page(self, index: int) -> bytes:
        """Page block ``index``, its checksum checked (SnapshotRefused on a mismatch)."""
        nbytes = self.header.geometry.page_bytes
        raw = self._pread(nbytes, self.header.data_offset() + index * nbytes)
        if zlib.crc32(raw) != int(self._crcs[index]):
            raise SnapshotRefused(f"checksum mismatch in page block {index}")
        return raw

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
