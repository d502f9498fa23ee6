#!/usr/bin/env python3
"""The seed's workload through the scheduler on the bundled model: one long
shared prefix (a system prompt) and many streams over it.

Reports, measured in this one run:
- KV pages radixserve holds vs a per-slot cache (N x (prefix + unique));
- time to first token with the prefix cold vs cached, and vs a prompt of the
  unique part alone (target: cached within 1.2x of unique-alone);
- aggregate decode tok/s for 1, 2, 4, 8, 16 streams sharing the prefix;
- aggregate tok/s of 8 streams before and after a system-prompt rotation;
- scheduler overhead per step as a share of the step (target < 5 % at 8 streams).
Prints a table; --json PATH writes the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

# numpy's BLAS threads would spin beside the engine's pool (see radixserve/__init__.py)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from radixserve.engine import Model  # noqa: E402
from scheduler.config import SchedulerConfig  # noqa: E402
from scheduler.request import GenerateRequest  # noqa: E402
from scheduler.sampling import SamplingParams  # noqa: E402
from scheduler.scheduler import Scheduler  # noqa: E402

GREEDY = SamplingParams(temperature=0.0)


def toks(rng: np.random.Generator, n: int) -> list[int]:
    return [int(t) for t in rng.integers(100, 40000, n)]


async def ttft(s: Scheduler, prompt: list[int]) -> float:
    t0 = time.perf_counter()
    h = s.submit(GenerateRequest(prompt, GREEDY, max_tokens=1))
    first = None
    async for ev in h:
        if first is None and ev.token is not None:
            first = time.perf_counter() - t0
    assert first is not None
    return first


async def decode_rate(s: Scheduler, prompts: list[list[int]], n: int) -> tuple[float, float]:
    """Aggregate tok/s over the steps where every stream decodes, and the
    scheduler's share of those steps."""
    hs = [s.submit(GenerateRequest(p, GREEDY, max_tokens=n)) for p in prompts]
    mark = s.step_no
    for h in hs:
        async for _ in h:
            pass
    steps = [st for st in s.step_log if st.step > mark and st.decode_tokens == len(prompts) and not st.prefill_tokens]
    if not steps:
        return 0.0, 0.0
    wall = sum(st.schedule_s + st.forward_s for st in steps)
    return sum(st.decode_tokens for st in steps) / wall, sum(st.schedule_s for st in steps) / wall


async def run(args: argparse.Namespace) -> dict[str, object]:
    rng = np.random.default_rng(0)
    model = Model()
    ps = 16
    prefix, unique, n_streams = toks(rng, args.prefix), [toks(rng, args.unique) for _ in range(16)], args.streams
    kv_pages = -(-(args.prefix + 16 * (args.unique + args.gen + ps)) // ps) + 64
    s = Scheduler(model, model.kv_store(n_pages=kv_pages), SchedulerConfig(max_running=32, max_batch_tokens=512))
    out: dict[str, object] = {"prefix_tokens": args.prefix, "unique_tokens": args.unique, "streams": n_streams}
    async with s:
        out["ttft_unique_alone_s"] = await ttft(s, toks(rng, args.unique))
        out["ttft_cold_s"] = await ttft(s, prefix + unique[0])
        await s.set_system_prompt(prefix)
        out["ttft_cached_s"] = await ttft(s, prefix + unique[1])
        out["ttft_cached_over_unique"] = out["ttft_cached_s"] / out["ttft_unique_alone_s"]  # type: ignore[operator]

        # memory: n_streams requests over the prefix, all running at once
        hs = [s.submit(GenerateRequest(prefix + unique[i], GREEDY, max_tokens=args.gen)) for i in range(n_streams)]
        peak = 0
        while not all(h.finished for h in hs):
            await asyncio.sleep(0.01)
            st = s.alloc.stats()
            peak = max(peak, st.tree.in_tree_pages + st.held_pages)
        per_slot = n_streams * -(-(args.prefix + args.unique + args.gen) // ps)
        out.update(kv_pages_radixserve=peak, kv_pages_per_slot=per_slot, kv_saving=per_slot / peak)

        rates = {}
        for k in (1, 2, 4, 8, 16):
            rate, sched_share = await decode_rate(s, [prefix + unique[i][:8] for i in range(k)], args.gen)
            rates[k] = rate
            out[f"sched_share_{k}"] = sched_share
        out["decode_tok_s"] = rates

        before, _ = await decode_rate(s, [prefix + unique[i][:8] for i in range(8)], args.gen)
        new_prefix = toks(rng, args.prefix)
        hs = [s.submit(GenerateRequest(prefix + unique[i][:8] + [5], GREEDY, max_tokens=args.gen * 4))
              for i in range(8)]
        while not all(q.state.value == "decode" for h in hs for q in h.sequences):
            await asyncio.sleep(0.005)
        mark = s.step_no
        t0 = time.perf_counter()
        await s.set_system_prompt(new_prefix)
        rotation_s = time.perf_counter() - t0
        during = [st for st in s.step_log if st.step > mark]
        for h in hs:
            async for _ in h:
                pass
        after, _ = await decode_rate(s, [new_prefix + unique[i][:8] for i in range(8)], args.gen)
        out.update(rotation_s=rotation_s, rotation_min_decode_batch=min(st.decode_tokens for st in during),
                   tok_s_8_before_rotation=before, tok_s_8_after_rotation=after)
        t0 = time.perf_counter()
        await ttft(s, toks(rng, args.prefix))
        out["prefill_of_a_new_prefix_alone_s"] = time.perf_counter() - t0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefix", type=int, default=6000)
    ap.add_argument("--unique", type=int, default=1000)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="prefix 1,500, unique 200, 16 generated")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.prefix, args.unique, args.gen = 1500, 200, 16
    out = asyncio.run(run(args))
    print(f"workload: {args.prefix}-token prefix, {args.streams} x {args.unique} unique tokens, bundled model")
    print(f"KV pages held: radixserve {out['kv_pages_radixserve']}, per-slot cache {out['kv_pages_per_slot']} "
          f"({out['kv_saving']:.1f}x less)")
    print(f"TTFT: unique part alone {out['ttft_unique_alone_s']:.2f} s, prefix cold {out['ttft_cold_s']:.2f} s, "
          f"prefix cached {out['ttft_cached_s']:.2f} s ({out['ttft_cached_over_unique']:.2f}x the unique part; target <= 1.2x)")
    print("streams  decode tok/s (aggregate)  scheduler share of step")
    for k, r in out["decode_tok_s"].items():  # type: ignore[union-attr]
        print(f"{k:7d}  {r:24.1f}  {100 * out[f'sched_share_{k}']:22.1f}%")
    print(f"rotation: 8 streams {out['tok_s_8_before_rotation']:.1f} tok/s before, {out['tok_s_8_after_rotation']:.1f} after; "
          f"the rotation took {out['rotation_s']:.2f} s (a new prefix alone: {out['prefill_of_a_new_prefix_alone_s']:.2f} s), "
          f"smallest decode batch during it: {out['rotation_min_decode_batch']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
