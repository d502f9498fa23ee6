"""Save a scheduler's prefix cache to a snapshot file, and load one back at start.

Saving never stalls serving: on the event loop it only lists the tree and locks
it (pages in the tree are immutable, and locked ones cannot be evicted and
reused); a worker thread reads the pages and writes the file; the locks are
released on the loop when the thread is done, even if the caller was cancelled.
So that running and arriving requests still find pages meanwhile, a save
leaves a reserve of the pool free or evictable: when the tree holds more than
that allows, its least recently used leaves are left out of the snapshot (a
load with a smaller budget would drop those first anyway).

Loading happens before the scheduler starts. A snapshot that cannot be used
(another model or page geometry, another format version, a truncated file, a
checksum mismatch) is refused with one warning and the cache stays empty: the
tree is only changed once every page the load keeps has been read and checked.
Pages beyond the store's free pages are dropped least recently used first.
Pins are not restored as pins: what the server pins is its configuration's
business (its system prompt is re-pinned at start, and hits the loaded pages).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import Any

from scheduler.cache_image import capture, restore, trim
from scheduler.errors import CacheError
from scheduler.scheduler import Scheduler

from .model_identity import model_identity
from .snapshot_file import Snapshot, WriteReport, write_snapshot
from .snapshot_format import Geometry, SnapshotRefused

log = logging.getLogger("radixserve.cache")


@dataclasses.dataclass(frozen=True, slots=True)
class LoadReport:
    path: str
    loaded: bool
    reason: str | None = None  # why nothing was loaded (None when loaded)
    nodes: int = 0
    pages: int = 0
    tokens: int = 0
    dropped_pages: int = 0  # in the snapshot, beyond the KV budget
    seconds: float = 0.0


def _identity(sched: Scheduler) -> tuple[str, str, Geometry]:
    model: Any = sched.engine
    return model_identity(model.path), os.path.basename(model.path), Geometry.of(model, sched.kv)


def _write(sched: Scheduler, path: str, image: Any) -> WriteReport:
    ident, name, geometry = _identity(sched)
    return write_snapshot(path, image, model_identity=ident, model_file=name, geometry=geometry,
                          read_page=sched.kv.read_page)


def default_reserve(sched: Scheduler) -> int:
    """Pages a save leaves free or evictable: an eighth of the pool plus one full step's prefill."""
    return sched.alloc.total // 8 + -(-sched.config.max_batch_tokens // sched.page_size)


async def save_cache(sched: Scheduler, path: str | os.PathLike[str], *,
                     reserve_pages: int | None = None) -> WriteReport:
    """Snapshot the prefix cache to ``path`` while serving continues.

    Call on the scheduler's event loop. ``reserve_pages`` (default
    ``default_reserve``) stay free or evictable during the save. Raises OSError
    (and leaves the previous snapshot in place) when the file cannot be written.
    """
    loop = asyncio.get_running_loop()
    reserve = default_reserve(sched) if reserve_pages is None else reserve_pages
    lockable = sched.cache.evictable_pages - max(0, reserve - sched.alloc.free_pages)
    image, handles = capture(sched.cache, sched.cache.in_tree_pages - sched.cache.evictable_pages + lockable)

    def release(_: object) -> None:
        for h in handles:
            h.release()

    fut = loop.run_in_executor(None, _write, sched, os.fspath(path), image)
    fut.add_done_callback(release)  # runs on the loop, only once the writer is done with the pages
    try:
        report = await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])  # finish the file: a later save must not be overtaken by this one
        raise
    log.info("saved the prefix cache to %s: %d nodes, %d tokens, %.1f MB in %.2f s", report.path,
             report.nodes, report.tokens, report.bytes / 1e6, report.seconds)
    return report


def save_cache_now(sched: Scheduler, path: str | os.PathLike[str]) -> WriteReport:
    """The same for a scheduler whose loop is not running (stopped, or never started)."""
    image, handles = capture(sched.cache)
    try:
        return _write(sched, os.fspath(path), image)
    finally:
        for h in handles:
            h.release()


def load_cache(sched: Scheduler, path: str | os.PathLike[str], *, max_pages: int | None = None) -> LoadReport:
    """Fill the (empty) cache of a scheduler that has not started from ``path``.

    Never raises for a bad or missing snapshot: it logs one line and returns a
    report with ``loaded=False`` and the reason, the cache left empty.
    """
    t0 = time.perf_counter()
    path = os.fspath(path)
    if not os.path.exists(path):
        log.info("no prefix-cache snapshot at %s; starting with an empty cache", path)
        return LoadReport(path, False, "no such file")
    try:
        report = _load(sched, path, max_pages, t0)
    except (SnapshotRefused, CacheError, OSError, ValueError) as e:
        reason = str(e) if isinstance(e, SnapshotRefused) else f"{type(e).__name__}: {e}"
        log.warning("refused the prefix-cache snapshot %s: %s; starting with an empty cache", path, reason)
        return LoadReport(path, False, reason, seconds=time.perf_counter() - t0)
    log.info("loaded the prefix cache from %s: %d nodes, %d tokens (%d pages dropped for the KV budget) "
             "in %.2f s", path, report.nodes, report.tokens, report.dropped_pages, report.seconds)
    return report


def _load(sched: Scheduler, path: str, max_pages: int | None, t0: float) -> LoadReport:
    ident, _, geometry = _identity(sched)
    cache, alloc, kv = sched.cache, sched.alloc, sched.kv
    if cache.stats().nodes:
        raise SnapshotRefused("the cache is not empty; a snapshot loads only at start")
    with Snapshot(path, model_identity=ident, geometry=geometry) as snap:
        budget = alloc.free_pages if max_pages is None else min(max_pages, alloc.free_pages)
        image = trim(snap.image, budget)
        ids = alloc.allocate(image.n_pages)
        try:
            for block, page in zip(image.page_ids(), ids):
                kv.write_page(int(page), snap.read_page(int(block)))
            restore(cache, image.with_pages(ids), pins=False)
        except BaseException:
            alloc.free(ids)  # restore is all or nothing: none of them is in the tree
            raise
    return LoadReport(path, True, None, len(image.nodes), image.n_pages, image.n_tokens,
                      snap.image.n_pages - image.n_pages, time.perf_counter() - t0)
