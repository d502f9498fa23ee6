#!/usr/bin/env python3
"""Sampling cost per step for a batch of 16 over the bundled model's vocabulary,
next to the forward pass of the same batch (16 decode tokens), measured in
the same run. Logits are the model's own (real distributions, not noise).
Prints a table; --json PATH writes one entry per sampler setting."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# numpy's BLAS threads would spin beside the engine's pool (see radixserve/__init__.py)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from radixserve.engine import Model, SeqInput  # noqa: E402
from scheduler.sampling import SamplerState, SamplingParams, sample_batch  # noqa: E402

SETTINGS = {
    "greedy": SamplingParams(temperature=0.0),
    "temperature 0.8": SamplingParams(temperature=0.8),
    "top_p 0.9": SamplingParams(temperature=0.8, top_p=0.9),
    "llama.cpp defaults (k40 p0.95 minp0.05)": SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05),
    "penalties + logit_bias": SamplingParams(temperature=0.8, repetition_penalty=1.1, presence_penalty=0.5,
                                             frequency_penalty=0.5, logit_bias={2: -5.0, 198: 1.0}),
    "top_p 0.9 + logprobs 5": SamplingParams(temperature=0.8, top_p=0.9, logprobs=5),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=None)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    model = Model()
    B = args.batch
    kv = model.kv_store(n_pages=B * 2)
    rng = np.random.default_rng(0)
    prompts = [[int(t) for t in rng.integers(100, 40000, 20)] for _ in range(B)]
    logits = model.forward(kv, [SeqInput(p, 0, [2 * i, 2 * i + 1]) for i, p in enumerate(prompts)]).copy()
    t0 = time.perf_counter()
    reps = 10
    for _ in range(reps):
        model.forward(kv, [SeqInput([5], 20, [2 * i, 2 * i + 1]) for i in range(B)])
    step_ms = (time.perf_counter() - t0) / reps * 1e3
    print(f"forward of {B} decode tokens: {step_ms:.2f} ms (vocabulary {model.n_vocab})")
    print(f"{'sampler':42} {'ms/step':>8} {'share of forward':>17}")
    rows = []
    for name, params in SETTINGS.items():
        states = [SamplerState(params, prompts[i], default_seed=i) for i in range(B)]
        best = min(_time(lambda: sample_batch(logits, states)) for _ in range(5))
        rows.append({"sampler": name, "batch": B, "ms_per_step": best * 1e3, "forward_ms": step_ms,
                     "share_of_forward": best * 1e3 / step_ms})
        print(f"{name:42} {best * 1e3:8.2f} {100 * best * 1e3 / step_ms:16.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
