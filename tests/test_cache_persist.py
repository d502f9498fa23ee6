"""Save the prefix cache, restart (new Model, KV store, Scheduler), load it:
the same prompt is served from the cache with the same output, bit for bit.
Every snapshot that must be refused leaves the cache empty, and a save that
dies half-way leaves the previous snapshot as it was."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import radixserve.snapshot_file as snapshot_file
from radixserve.cache_persist import load_cache, save_cache, save_cache_now
from radixserve.engine import Model
from radixserve.snapshot_format import DATA_ALIGN
from sched_util import collect, make_scheduler, rand_tokens
from scheduler.request import GenerateRequest
from scheduler.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
PS = 16
MODEL_ARGS = dict(weight_type="Q8_0", n_ctx=2048, seed=5)


@pytest.fixture(scope="module")
def model_path(tiny_model):
    return tiny_model(**MODEL_ARGS)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(3)
    system = rand_tokens(rng, 200, 256)
    return [system + rand_tokens(rng, 37 + 10 * i, 256) for i in range(3)]


async def serve(sched, prompts, max_tokens=12):
    outs = []
    for p in prompts:
        outs.append(await collect(sched.submit(GenerateRequest(p, GREEDY, max_tokens=max_tokens))))
    return outs


def cached_prefix(prompt: list[int]) -> int:
    return (len(prompt) - 1) // PS * PS


@pytest.fixture(scope="module")
def saved(model_path, prompts, tmp_path_factory):
    """A snapshot written by a server that answered the prompts; with its outputs."""
    path = tmp_path_factory.mktemp("persist") / "cache.rsx"

    async def go():
        async with make_scheduler(Model(model_path), 128) as s:
            outs = await serve(s, prompts)
            report = await save_cache(s, path)
            s.check_invariants()
            return outs, report
    outs, report = asyncio.run(go())
    return path, outs, report


def restart(model_path, n_pages=128, path=None):
    s = make_scheduler(Model(model_path), n_pages)
    report = load_cache(s, path) if path is not None else None
    s.check_invariants()
    return s, report


def test_restart_serves_from_the_snapshot_bit_identically(model_path, prompts, saved):
    path, before, wrote = saved
    assert wrote.pages > 0 and os.path.getsize(path) == wrote.bytes
    s, report = restart(model_path, path=path)
    assert report.loaded and report.pages == wrote.pages and report.dropped_pages == 0

    async def go():
        async with s:
            outs = await serve(s, prompts)
            s.check_invariants()
            return outs
    after = asyncio.run(go())
    for p, a, b in zip(prompts, before, after):
        assert b.cached == cached_prefix(p)
        assert b.tokens == a.tokens


def test_cold_start_computes_everything(model_path, prompts):
    s, _ = restart(model_path)

    async def go():
        async with s:
            return await serve(s, prompts[:1])
    (out,) = asyncio.run(go())
    assert out.cached == 0


def test_a_smaller_budget_drops_least_recently_used_pages(model_path, prompts, saved):
    path, before, wrote = saved
    s, report = restart(model_path, n_pages=20, path=path)
    assert report.loaded and report.pages == 20 and report.dropped_pages == wrote.pages - 20
    # the last prompt served is the most recent: its whole path survived
    assert s.cache.peek(prompts[-1][:-1]) == cached_prefix(prompts[-1])
    assert s.cache.peek(prompts[0][:-1]) < cached_prefix(prompts[0])


def _refused(model_path, path, n_pages=128):
    s, report = restart(model_path, n_pages, path)
    assert not report.loaded and report.reason
    assert s.cache.in_tree_pages == 0 and s.alloc.free_pages == s.alloc.total
    return report.reason


def _copy(src, tmp_path, name="copy.rsx"):
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return dst


def test_refuses_another_model(tiny_model, saved, tmp_path):
    other = tiny_model(**{**MODEL_ARGS, "seed": 6})
    assert "another model" in _refused(other, saved[0])


def test_refuses_another_page_geometry(model_path, saved):
    s = make_scheduler(Model(model_path), 64, page_size=32)
    report = load_cache(s, saved[0])
    assert not report.loaded and "page_size" in report.reason and s.cache.in_tree_pages == 0


def test_refuses_another_kv_dtype(model_path, saved):
    m = Model(model_path)
    from scheduler.scheduler import Scheduler
    s = Scheduler(m, m.kv_store(n_pages=64, page_size=PS, dtype="f32"))
    report = load_cache(s, saved[0])
    assert not report.loaded and "kv_dtype" in report.reason and s.cache.in_tree_pages == 0


def test_refuses_another_version(model_path, saved, tmp_path):
    p = _copy(saved[0], tmp_path)
    with open(p, "r+b") as f:
        f.seek(8)
        f.write((99).to_bytes(4, "little"))
    assert "version 99" in _refused(model_path, p)


def test_refuses_a_truncated_file(model_path, saved, tmp_path):
    size = os.path.getsize(saved[0])
    for cut in (10, 100, DATA_ALIGN + 5, size - 1):
        p = _copy(saved[0], tmp_path)
        with open(p, "r+b") as f:
            f.truncate(cut)
        assert "truncated" in _refused(model_path, p)


def test_refuses_a_checksum_mismatch(model_path, saved, tmp_path):
    p = _copy(saved[0], tmp_path)
    with open(p, "r+b") as f:
        f.seek(DATA_ALIGN + 12345)  # inside some page block
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))
    assert "checksum mismatch in page block" in _refused(model_path, p)


def test_refuses_garbage_and_a_corrupt_tree(model_path, saved, tmp_path):
    p = tmp_path / "garbage.rsx"
    p.write_bytes(os.urandom(5000))
    assert "bad magic" in _refused(model_path, p)
    q = _copy(saved[0], tmp_path)
    with open(q, "r+b") as f:
        f.seek(400)  # past the header: inside the tree
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))
    assert "checksum mismatch" in _refused(model_path, q)


def test_a_missing_file_starts_empty(model_path, tmp_path):
    s, report = restart(model_path, path=tmp_path / "nope.rsx")
    assert not report.loaded and s.cache.in_tree_pages == 0


def test_a_failed_save_leaves_the_previous_snapshot(model_path, saved, tmp_path, monkeypatch):
    p = _copy(saved[0], tmp_path, "cache.rsx")
    before = p.read_bytes()
    s, _ = restart(model_path, path=p)
    calls = 0
    real = s.kv.read_page

    def failing(page):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError("disk full (simulated)")
        return real(page)
    monkeypatch.setattr(s.kv, "read_page", failing)
    with pytest.raises(OSError, match="simulated"):
        save_cache_now(s, p)
    assert p.read_bytes() == before and os.listdir(tmp_path) == ["cache.rsx"]
    s.check_invariants()  # the save's locks were released
    assert s.cache.evictable_pages == s.cache.in_tree_pages


KILLED_SAVER = textwrap.dedent("""
    import os, sys, time
    from radixserve.cache_persist import load_cache, save_cache_now
    from radixserve.engine import Model
    from scheduler.scheduler import Scheduler
    model_path, path = sys.argv[1], sys.argv[2]
    m = Model(model_path)
    s = Scheduler(m, m.kv_store(n_pages=128, page_size=16))
    assert load_cache(s, path).loaded
    real, n = s.kv.read_page, [0]
    def slow(page):
        n[0] += 1
        if n[0] == 3:
            print("writing", flush=True)
            time.sleep(60)
        return real(page)
    s.kv.read_page = slow
    save_cache_now(s, path)
""")


def test_a_save_killed_mid_write_leaves_the_previous_snapshot(model_path, saved, tmp_path):
    p = _copy(saved[0], tmp_path, "cache.rsx")
    before = p.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVER, str(model_path), str(p)],
                            stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(name.endswith(".tmp") for name in os.listdir(tmp_path))  # it was mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert p.read_bytes() == before
    s, report = restart(model_path, path=p)
    assert report.loaded


def test_saving_does_not_block_serving_and_unlocks_after(model_path, prompts, tmp_path, monkeypatch):
    """While the writer thread is stuck, requests keep being served."""
    path = tmp_path / "live.rsx"
    gate = None

    async def go():
        nonlocal gate
        async with make_scheduler(Model(model_path), 128) as s:
            await serve(s, prompts[:2])
            loop = asyncio.get_running_loop()
            gate = asyncio.Event()
            import threading
            release = threading.Event()
            real = snapshot_file.write_snapshot

            def slow(*a, **k):
                loop.call_soon_threadsafe(gate.set)
                release.wait(30)
                return real(*a, **k)
            monkeypatch.setattr("radixserve.cache_persist.write_snapshot", slow)
            saving = asyncio.create_task(save_cache(s, path, reserve_pages=0))
            await gate.wait()
            assert s.cache.evictable_pages == 0  # everything the save copies is locked
            (out,) = await serve(s, prompts[2:], max_tokens=4)  # served while the save waits
            assert len(out.tokens[0]) == 4
            release.set()
            report = await saving
            s.check_invariants()
            assert s.cache.stats().locked_pages == 0
            return report
    report = asyncio.run(go())
    assert report.pages > 0 and os.path.exists(path)
