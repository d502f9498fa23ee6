"""The compute floor of a forward: its multiply-adds over the CPU's peak rates.

Single-stream decode is bound by memory (every weight byte read per token:
bench_engine prints that floor). Batched decode and prefill reuse each weight
for many tokens, so their physical limit is arithmetic (or, for a few
streams, still the weight bytes of a step, whichever is slower): the int16 products
of the quantized GEMMs at the peak rate of the instruction the engine's
kernels use, plus attention's f32 multiply-adds at the FMA peak. Both rates
are measured here by scripts/peak_arith.c (register-only loops), built with
the machine's C compiler. Everything else a step does (the per-block float
step of the GEMM, softmax, norms, packing, threads handing off) is left out,
so no engine can reach the floor: it is an upper bound on tok/s.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Peaks:
    """Multiply-adds per second, summed over `threads` threads."""
    isa: str
    threads: int
    int16_macs: float
    f32_macs: float


_BUILD_DIRS: list[tempfile.TemporaryDirectory] = []  # kept alive with the built executable


@functools.cache
def _peak_exe() -> str | None:
    """peak_arith.c built once per process (in a directory removed at exit); None without a compiler."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    tmp = tempfile.TemporaryDirectory()
    _BUILD_DIRS.append(tmp)
    exe = os.path.join(tmp.name, "peak_arith")
    build = subprocess.run([cc, "-std=c11", "-O2", os.path.join(HERE, "peak_arith.c"), "-o", exe, "-lpthread"],
                           capture_output=True, text=True)
    return exe if build.returncode == 0 else None


def measure_peaks(isa: str, threads: int) -> Peaks | None:
    """Run peak_arith.c; None where there is no compiler or no loop for this ISA."""
    exe = _peak_exe()
    if exe is None:
        return None
    run = subprocess.run([exe, isa, str(threads)], capture_output=True, text=True)
    if run.returncode != 0:
        return None
    d = json.loads(run.stdout)
    return Peaks(isa, threads, float(d["int16_macs"]), float(d["f32_macs"]))


def gemm_macs_per_token(hp, logits: bool = True) -> int:
    """Weight multiply-adds per token: q, k, v, o, gate, up, down in every layer, then (when the
    token's logits are wanted) the output matrix."""
    E, F, qd, kvd = hp.n_embd, hp.n_ff, hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    per_layer = E * qd + 2 * E * kvd + qd * E + 3 * E * F
    return hp.n_layer * per_layer + (hp.n_vocab * E if logits else 0)


def attention_macs(hp, positions: float) -> float:
    """Scores and V sums of one token that attends `positions` positions, over every layer and head."""
    return 2.0 * hp.n_layer * hp.n_head * hp.head_dim * positions


def decode_floor(hp, peaks: Peaks, streams: int, ctx: int, n_gen: int, weight_s: float = 0.0) -> float:
    """Aggregate tok/s at the floor: `streams` sequences each decoding n_gen tokens after ctx
    positions. A step also reads every weight once: weight_s (weight bytes / bandwidth) bounds
    it from below too, which is what binds a few streams."""
    mean_positions = ctx + (n_gen + 1) / 2
    step_s = (streams * gemm_macs_per_token(hp) / peaks.int16_macs
              + streams * attention_macs(hp, mean_positions) / peaks.f32_macs)
    return streams / max(step_s, weight_s)


def prefill_floor(hp, peaks: Peaks, n_tokens: int) -> float:
    """tok/s at the floor for a prompt of n_tokens from position 0 (token p attends p + 1 positions),
    logits of the last one only."""
    positions = n_tokens * (n_tokens + 1) / 2
    gemm = n_tokens * gemm_macs_per_token(hp, logits=False) + hp.n_vocab * hp.n_embd
    total_s = (gemm / peaks.int16_macs
               + attention_macs(hp, positions) / peaks.f32_macs)
    return n_tokens / total_s
