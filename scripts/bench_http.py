#!/usr/bin/env python3
"""N concurrent streaming chat clients through the HTTP API, all sharing one
long system prompt, measured two ways in the same run:

- pinned: the server holds the system prompt (PUT /v1/system_prompt) and the
  clients send only their question (radixserve's way);
- per-request: every client sends the system message itself, as clients of
  llama-server do (the prefix cache still dedups it once it is computed).

Prints TTFT and inter-token latency percentiles and aggregate tok/s per mode.
Starts its own server on the bundled model unless --url is given.
--json PATH writes the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import aiohttp
import aiohttp.web
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from radixserve.server import ServerConfig, create_app  # noqa: E402

SYSTEM = ("You are a meticulous assistant for a public library. You answer questions about opening hours, "
          "loans, renewals, fines, events and the catalogue. Keep every answer short and polite. ") * 4


async def one(session: aiohttp.ClientSession, url: str, i: int, max_tokens: int, with_system: bool) -> dict:
    messages = [{"role": "user", "content": f"Question {i}: can I renew a book for the {i}th time?"}]
    if with_system:
        messages.insert(0, {"role": "system", "content": SYSTEM})
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    stamps: list[float] = []
    usage = None
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        async for line in r.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
    return {"ttft": stamps[0] - t0 if stamps else float("nan"), "itl": list(np.diff(stamps)),
            "tokens": usage["completion_tokens"] if usage else 0,
            "cached": usage["prompt_tokens_details"]["cached_tokens"] if usage else 0}


async def mode(url: str, n: int, max_tokens: int, with_system: bool) -> dict:
    async with aiohttp.ClientSession() as s:
        await one(s, url, 10_000, 2, with_system)  # warm: the shared prefix is computed once
        t0 = time.perf_counter()
        res = await asyncio.gather(*(one(s, url, i, max_tokens, with_system) for i in range(n)))
        wall = time.perf_counter() - t0
    ttft = [r["ttft"] for r in res]
    itl = [x for r in res for x in r["itl"]]
    return {"clients": n, "ttft_p50_ms": 1e3 * float(np.percentile(ttft, 50)),
            "ttft_p95_ms": 1e3 * float(np.percentile(ttft, 95)),
            "itl_p50_ms": 1e3 * float(np.percentile(itl, 50)) if itl else float("nan"),
            "itl_p95_ms": 1e3 * float(np.percentile(itl, 95)) if itl else float("nan"),
            "tok_s": sum(r["tokens"] for r in res) / wall, "cached_mean": float(np.mean([r["cached"] for r in res]))}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None, help="a running server (default: start one on the bundled model)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    runner = None
    url = args.url
    if url is None:
        app = create_app(ServerConfig(threads=args.threads, kv_pages=1024))
        runner = aiohttp.web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(url + "/health") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        async with s.put(url + "/v1/system_prompt", json={"content": SYSTEM}) as r:
            r.raise_for_status()
    out = {"pinned": await mode(url, args.clients, args.max_tokens, False),
           "per_request": await mode(url, args.clients, args.max_tokens, True)}
    print(f"{'mode':12} {'clients':>7} {'ttft p50':>9} {'ttft p95':>9} {'itl p50':>8} {'itl p95':>8} "
          f"{'tok/s':>7} {'cached':>7}")
    for name, m in out.items():
        print(f"{name:12} {m['clients']:7d} {m['ttft_p50_ms']:8.1f}ms {m['ttft_p95_ms']:8.1f}ms "
              f"{m['itl_p50_ms']:6.1f}ms {m['itl_p95_ms']:6.1f}ms {m['tok_s']:7.1f} {m['cached_mean']:7.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    if runner is not None:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
