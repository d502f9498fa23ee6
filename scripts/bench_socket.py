#!/usr/bin/env python3
"""The msgpack socket protocol against the HTTP API, side by side in one run,
on one `radixserve serve` process started here (both fronts on the same
scheduler and model):

- round trip of a request that does no model work (tokenize), sequential;
- round trip of a 1-token greedy generation;
- aggregate throughput with 1, 8, 64 streamed requests in flight (socket: all
  on one connection; HTTP: as many keep-alive connections, SSE streaming);
- the protocol's CPU per streamed token (server encode + client decode of one
  token message, measured in-process) against the 50 us target.

Prints a table; --json PATH writes the figures. Starts its own server on the
bundled model unless -m is given.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from radixserve.client import AsyncClient  # noqa: E402
from radixserve.wire import codec, messages  # noqa: E402
from radixserve.wire.framing import FrameDecoder  # noqa: E402

SHORT = "Hello"
TEXT = "The library opens at nine and closes at five on weekdays; on Saturdays it closes at one."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], int, int]:
    http_port, sock_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "radixserve", "serve", "--port", str(http_port), "--socket-port", str(sock_port),
           "-t", str(args.threads), "--max-running", "64", "--log-level", "warning"]
    if args.model:
        cmd += ["-m", args.model]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, http_port, sock_port


async def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not come up")


def summary(samples: list[float]) -> dict[str, float]:
    xs = sorted(samples)
    return {"median_us": statistics.median(xs) * 1e6, "p99_us": xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e6}


async def timed(n: int, call: Any) -> list[float]:
    for _ in range(min(20, n)):  # warm up
        await call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def round_trips(c: AsyncClient, http: aiohttp.ClientSession, url: str, n: int) -> dict[str, Any]:
    def tok(text: str) -> tuple[Any, Any]:
        async def sock() -> None:
            await c.tokenize(text)

        async def over_http() -> None:
            async with http.post(url + "/tokenize", json={"content": text}) as r:
                await r.json()
        return sock, over_http

    gen = {"max_tokens": 1, "temperature": 0, "ignore_eos": True}

    async def sock_gen() -> None:
        await c.generate(TEXT, **gen)

    async def http_gen() -> None:
        async with http.post(url + "/v1/completions", json={"prompt": TEXT, **gen}) as r:
            await r.json()

    out: dict[str, Any] = {}
    for name, text in (("tokenize_5_chars", SHORT), ("tokenize_88_chars", TEXT)):
        sock, over_http = tok(text)
        out[name] = {"socket": summary(await timed(n, sock)), "http": summary(await timed(n, over_http))}
    return {**out,
            "generate_1": {"socket": summary(await timed(n // 4, sock_gen)),
                           "http": summary(await timed(n // 4, http_gen))}}


async def throughput(c: AsyncClient, url: str, in_flight: int, tokens: int, rounds: int) -> dict[str, float]:
    # Distinct prompts per front: neither gets prefix-cache hits from the other's run.
    params = {"max_tokens": tokens, "temperature": 0, "ignore_eos": True}

    async def sock_one(i: int) -> int:
        n = 0
        async for ev in c.stream(f"Socket request {i}: {TEXT}", **params):
            n += len(ev.get("ids", ()))
        return n

    async def http_one(s: aiohttp.ClientSession, i: int) -> int:
        body = {"prompt": f"HTTP request {i}: {TEXT}", "stream": True, "stream_options": {"include_usage": True}, **params}
        n = 0
        async with s.post(url + "/v1/completions", json=body) as r:
            async for line in r.content:  # a client parses every SSE chunk, as the socket client decodes every frame
                if line.startswith(b"data: {"):
                    usage = json.loads(line[6:]).get("usage")
                    if usage:
                        n = usage["completion_tokens"]
        return n

    out = {}
    t0 = time.perf_counter()
    total = 0
    for r in range(rounds):
        total += sum(await asyncio.gather(*(sock_one(r * in_flight + i) for i in range(in_flight))))
    out["socket_tok_s"] = total / (time.perf_counter() - t0)
    conn = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=conn) as s:
        t0 = time.perf_counter()
        total = 0
        for r in range(rounds):
            total += sum(await asyncio.gather(*(http_one(s, r * in_flight + i) for i in range(in_flight))))
        out["http_tok_s"] = total / (time.perf_counter() - t0)
    return out


def codec_cost(n: int = 50_000) -> float:
    """Seconds of protocol CPU per streamed token: the server's encode and the client's decode."""
    dec = FrameDecoder()
    t0 = time.perf_counter()
    for i in range(n):
        frame = codec.encode(messages.Token(id=i, index=0, ids=[1234], text=" word"))
        for body in dec.feed(frame):
            codec.decode(body, messages.ANSWERS, strict=False)
    return (time.perf_counter() - t0) / n


async def main(args: argparse.Namespace) -> dict[str, Any]:
    proc, http_port, sock_port = start_server(args)
    url = f"http://127.0.0.1:{http_port}"
    try:
        await wait_ready(url, proc)
        res: dict[str, Any] = {"codec_us_per_token": codec_cost() * 1e6}
        async with AsyncClient(port=sock_port, timeout=600) as c, aiohttp.ClientSession() as http:
            res["server"] = c.server
            res["round_trip"] = await round_trips(c, http, url, args.n)
            res["throughput"] = {}
            for k in args.in_flight:
                res["throughput"][k] = await throughput(c, url, k, args.tokens, args.rounds)
        return res
    finally:
        proc.terminate()
        proc.wait(30)


def report(res: dict[str, Any]) -> None:
    print(f"model {res['server']['model']}")
    print(f"{'round trip':24} {'socket med':>11} {'p99':>9} {'http med':>11} {'p99':>9} {'http/socket':>12}")
    for name, r in res["round_trip"].items():
        s, h = r["socket"], r["http"]
        print(f"{name:24} {s['median_us']:9.0f}us {s['p99_us']:7.0f}us {h['median_us']:9.0f}us "
              f"{h['p99_us']:7.0f}us {h['median_us'] / s['median_us']:11.2f}x")
    print(f"{'in flight':24} {'socket tok/s':>12} {'http tok/s':>12} {'socket/http':>12}")
    for k, t in res["throughput"].items():
        print(f"{k:<24} {t['socket_tok_s']:12.1f} {t['http_tok_s']:12.1f} {t['socket_tok_s'] / t['http_tok_s']:11.2f}x")
    tok = res["round_trip"]["tokenize_5_chars"]
    print(f"protocol CPU per streamed token (encode + decode): {res['codec_us_per_token']:.1f} us (target < 50 us)")
    print(f"tokenize round trip, HTTP/socket: {tok['http']['median_us'] / tok['socket']['median_us']:.2f}x "
          "(target >= 3x)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="GGUF model (default: the bundled SmolLM2)")
    ap.add_argument("-t", "--threads", type=int, default=1, help="server engine threads (default 1)")
    ap.add_argument("-n", type=int, default=1000, help="round trips per measurement (default 1000)")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per streamed request (default 16)")
    ap.add_argument("--rounds", type=int, default=1, help="batches of requests per throughput figure")
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--json", default=None, help="write the figures here")
    a = ap.parse_args()
    try:
        import uvloop  # the server runs on uvloop; so do both clients here
        figures = uvloop.run(main(a))
    except ImportError:
        figures = asyncio.run(main(a))
    report(figures)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(figures, f, indent=1)
