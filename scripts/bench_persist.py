#!/usr/bin/env python3
"""Persisting the prefix cache, on the bundled model: a long system prompt plus
many chats over it, saved, then loaded by a fresh Model + KV store + Scheduler.

Reports, measured in this one run:
- save time (the event loop only lists and locks the tree; a thread writes),
  the longest the event loop stalled during the save, file bytes, bytes per cached token;
- load time, and its throughput against the peer: reading the same file raw;
- time to first token of an old chat's next turn after the restart vs a cold start.

--quick (the default) is a 1,500-token system prompt and 10 chats; --full is
the issue's 6,000-token system prompt and 100 chats (minutes of prefill on a
small machine). --json PATH writes the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from radixserve.cache_persist import load_cache, save_cache  # noqa: E402
from radixserve.engine import Model  # noqa: E402
from scheduler.config import SchedulerConfig  # noqa: E402
from scheduler.request import GenerateRequest  # noqa: E402
from scheduler.sampling import SamplingParams  # noqa: E402
from scheduler.scheduler import Scheduler  # noqa: E402

GREEDY = SamplingParams(temperature=0.0)
PS = 16


def toks(rng: np.random.Generator, n: int) -> list[int]:
    return [int(t) for t in rng.integers(100, 40000, n)]


def scheduler(model: Model, n_pages: int) -> Scheduler:
    return Scheduler(model, model.kv_store(n_pages=n_pages, page_size=PS),
                     SchedulerConfig(max_running=16, max_batch_tokens=512))


async def run_chats(s: Scheduler, system: list[int], turns: list[list[int]], gen: int) -> list[list[int]]:
    """Each chat: system + its user turn, `gen` tokens generated; returns each chat's full token list."""
    await s.set_system_prompt(system)
    handles = [s.submit(GenerateRequest(system + u, GREEDY, max_tokens=gen)) for u in turns]
    out = []
    for u, h in zip(turns, handles):
        got = [ev.token async for ev in h if ev.token is not None]
        out.append(system + u + got)
    return out


async def ttft(s: Scheduler, prompt: list[int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    first, cached = None, 0
    async for ev in s.submit(GenerateRequest(prompt, GREEDY, max_tokens=1)):
        cached += ev.cached_tokens
        if first is None and ev.token is not None:
            first = time.perf_counter() - t0
    assert first is not None
    return first, cached


async def timed_save(s: Scheduler, path: str) -> tuple[float, float, object]:
    """Save while a ticker measures how long the event loop goes without running."""
    stall, stop = [0.0], asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stall[0] = max(stall[0], now - last)
            last = now
    t = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    report = await save_cache(s, path, reserve_pages=0)
    dt = time.perf_counter() - t0
    stop.set()
    await t
    return dt, stall[0], report


def raw_read(path: str) -> float:
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1,500-token system prompt, 10 chats (default)")
    size.add_argument("--full", action="store_true", help="6,000-token system prompt, 100 chats")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dir", default=None, help="where to write the snapshot (default: a temp dir)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    n_system, n_chats, n_user, n_gen = (6000, 100, 100, 16) if args.full else (1500, 10, 64, 8)
    rng = np.random.default_rng(0)
    system = toks(rng, n_system)
    turns = [toks(rng, n_user) for _ in range(n_chats)]
    next_turn = toks(rng, 24)
    n_pages = (n_system + n_chats * (n_user + n_gen + PS) + 256) // PS + 64
    workdir = args.dir or tempfile.mkdtemp(prefix="bench_persist_")
    path = os.path.join(workdir, "cache.rsx")

    async def before() -> dict:
        model = Model(threads=args.threads)
        s = scheduler(model, n_pages)
        async with s:
            t0 = time.perf_counter()
            chats = await run_chats(s, system, turns, n_gen)
            build_s = time.perf_counter() - t0
            save_s, stall_s, report = await timed_save(s, path)
        return dict(chats=chats, build_s=build_s, save_s=save_s, stall_s=stall_s, report=report)

    b = asyncio.run(before())
    report = b["report"]
    prompt = b["chats"][-1] + next_turn  # the last chat's next turn

    async def restarted() -> dict:
        model = Model(threads=args.threads)
        s = scheduler(model, n_pages)
        t0 = time.perf_counter()
        loaded = load_cache(s, path)
        load_s = time.perf_counter() - t0
        assert loaded.loaded, loaded.reason
        async with s:
            first, cached = await ttft(s, prompt)
        return dict(load_s=load_s, ttft_s=first, cached=cached)

    async def cold() -> dict:
        s = scheduler(Model(threads=args.threads), n_pages)
        async with s:
            first, cached = await ttft(s, prompt)
        return dict(ttft_s=first, cached=cached)

    warm = asyncio.run(restarted())
    read_s = raw_read(path)
    c = asyncio.run(cold())
    figures = {
        "workload": {"system_tokens": n_system, "chats": n_chats, "user_tokens": n_user, "generated": n_gen},
        "cached_tokens": report.tokens, "nodes": report.nodes, "file_bytes": report.bytes,
        "bytes_per_cached_token": report.bytes / max(report.tokens, 1),
        "build_s": b["build_s"], "save_s": b["save_s"], "save_loop_stall_s": b["stall_s"],
        "save_MBps": report.bytes / b["save_s"] / 1e6,
        "load_s": warm["load_s"], "load_MBps": report.bytes / warm["load_s"] / 1e6,
        "raw_read_s": read_s, "raw_read_MBps": report.bytes / read_s / 1e6,
        "ttft_prompt_tokens": len(prompt),
        "ttft_restarted_s": warm["ttft_s"], "ttft_restarted_cached": warm["cached"],
        "ttft_cold_s": c["ttft_s"], "ttft_cold_cached": c["cached"],
        "ttft_speedup": c["ttft_s"] / warm["ttft_s"],
    }
    rows = [
        ("cached tokens / nodes", f"{report.tokens} / {report.nodes}"),
        ("snapshot size", f"{report.bytes / 1e6:.1f} MB, {figures['bytes_per_cached_token']:.0f} B/token"),
        ("save (off the loop)", f"{b['save_s']:.3f} s, {figures['save_MBps']:.0f} MB/s; "
                                f"longest loop stall {b['stall_s'] * 1e3:.1f} ms"),
        ("load", f"{warm['load_s']:.3f} s, {figures['load_MBps']:.0f} MB/s "
                 f"(raw read of the file: {figures['raw_read_MBps']:.0f} MB/s)"),
        (f"TTFT, {len(prompt)}-token prompt", f"restarted {warm['ttft_s'] * 1e3:.1f} ms "
                                              f"({warm['cached']} cached) vs cold {c['ttft_s'] * 1e3:.1f} ms: "
                                              f"{figures['ttft_speedup']:.1f}x"),
        ("(building the cache took)", f"{b['build_s']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
    if not args.dir:
        os.unlink(path)
        os.rmdir(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
