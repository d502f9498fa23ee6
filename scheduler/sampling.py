"""Sampling: from a batch of logits to one token per sequence.

Pure numpy on token ids and logits; no text. The pipeline per row is the one
llama.cpp's and vLLM's users expect, in this order:

  logit_bias -> repetition / presence / frequency penalties -> (greedy when
  temperature == 0) -> top-k -> top-p -> min-p -> temperature -> draw

Reproducibility: every request owns its random generator, seeded from its
seed, and draws exactly one uniform number per sampled token, so the same
request with the same seed yields the same tokens whatever else shares its
batch. Rows are independent; the batch loop only saves Python overhead where
rows share work (greedy rows are one vectorized argmax).

Cost: a row that needs the sorted distribution (top-p or min-p without
top-k) sorts only a candidate set found by argpartition, widened until it
provably holds the nucleus, not the whole 49,152-token vocabulary.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

PENALTY_WINDOW = 64  # tokens of history the repetition penalty looks at (llama.cpp's default)


class SamplingError(ValueError):
    """A sampling parameter is out of range; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class SamplingParams:
    """What a request asks of the sampler. Validated once, at construction."""

    temperature: float = 1.0           # 0: greedy
    top_k: int = 0                     # 0: off
    top_p: float = 1.0                 # 1: off
    min_p: float = 0.0                 # 0: off
    repetition_penalty: float = 1.0    # 1: off; > 1 discourages repeats (llama.cpp / HF rule)
    presence_penalty: float = 0.0      # OpenAI: subtract once per token present in the output
    frequency_penalty: float = 0.0     # OpenAI: subtract per occurrence in the output
    logit_bias: Mapping[int, float] = dataclasses.field(default_factory=dict)
    seed: int | None = None
    logprobs: int = 0                  # top-N logprobs to report per step (0: none)

    def __post_init__(self) -> None:
        def num(name: str, lo: float, hi: float) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SamplingError(f"{name} must be a finite number, got {v!r}")
            if not lo <= v <= hi:
                raise SamplingError(f"{name} must be in [{lo}, {hi}], got {v}")

        num("temperature", 0.0, 100.0)
        num("top_p", 0.0, 1.0)
        num("min_p", 0.0, 1.0)
        num("repetition_penalty", 0.01, 100.0)
        num("presence_penalty", -2.0, 2.0)
        num("frequency_penalty", -2.0, 2.0)
        for name in ("top_k", "logprobs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise SamplingError(f"{name} must be a non-negative int, got {v!r}")
        if self.logprobs > 20:
            raise SamplingError(f"logprobs must be at most 20, got {self.logprobs}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise SamplingError(f"seed must be an int, got {self.seed!r}")
        for k, v in self.logit_bias.items():
            if isinstance(k, bool) or not isinstance(k, int):
                raise SamplingError(f"logit_bias keys must be token ids, got {k!r}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise SamplingError(f"logit_bias[{k}] must be a number, got {v!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def check_vocab(self, n_vocab: int) -> None:
        """Token ids in logit_bias must exist in this model's vocabulary."""
        for k in self.logit_bias:
            if not 0 <= k < n_vocab:
                raise SamplingError(f"logit_bias token id {k} is outside the vocabulary [0, {n_vocab})")


@dataclasses.dataclass(slots=True)
class TokenChoice:
    """One sampled token, with logprobs when the request asked for them
    (from a full log-softmax of the raw logits, before any sampler)."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


class SamplerState:
    """Per-request sampler state: its random generator and the history the
    penalties need (the prompt's tail and every generated token)."""

    __slots__ = ("params", "rng", "history", "counts", "_bias_ids", "_bias_vals")

    def __init__(self, params: SamplingParams, prompt: Sequence[int] = (), *, default_seed: int = 0) -> None:
        self.params = params
        seed = params.seed if params.seed is not None else default_seed
        self.rng = np.random.Generator(np.random.PCG64(seed & (2**64 - 1)))
        self.history: list[int] = list(prompt[-PENALTY_WINDOW:])
        self.counts: dict[int, int] = {}  # generated tokens only (OpenAI's penalties)
        self._bias_ids = np.fromiter(params.logit_bias.keys(), dtype=np.int64, count=len(params.logit_bias))
        self._bias_vals = np.fromiter(params.logit_bias.values(), dtype=np.float32, count=len(params.logit_bias))

    def accept(self, token: int) -> None:
        """Record a generated token (call after each sampled or forced token)."""
        self.history.append(token)
        if len(self.history) > 2 * PENALTY_WINDOW:
            del self.history[:-PENALTY_WINDOW]
        self.counts[token] = self.counts.get(token, 0) + 1

    def adjust(self, row: np.ndarray) -> np.ndarray:
        """Bias and penalties applied to a copy of one logits row (only the touched ids change)."""
        p = self.params
        needs = (self._bias_ids.size or p.repetition_penalty != 1.0
                 or p.presence_penalty or p.frequency_penalty)
        if not needs:
            return row
        row = row.copy()
        if self._bias_ids.size:
            row[self._bias_ids] += self._bias_vals
        if p.repetition_penalty != 1.0 and self.history:
            ids = np.unique(np.asarray(self.history[-PENALTY_WINDOW:], dtype=np.int64))
            v = row[ids]
            row[ids] = np.where(v > 0, v / p.repetition_penalty, v * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and self.counts:
            ids = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))
            n = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
            row[ids] -= p.frequency_penalty * n + p.presence_penalty
        return row


def log_softmax(row: np.ndarray) -> np.ndarray:
    """float64 log-probabilities of one logits row."""
    x = row.astype(np.float64)
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())


_CUTOFFS = (4.0, 8.0, 12.0, 16.0, 24.0, 32.0)  # nats below the top logit


def _top_set(x: np.ndarray, *, count: int = 0, mass: float = 0.0) -> np.ndarray:
    """The highest-logit ids, sorted (descending, ties by id), at least `count`
    of them and at least `mass` of exp(x - max) in weight.

    Grows a cutoff below the top logit instead of partitioning the whole
    vocabulary (argpartition costs ~0.4 ms on 49,152 logits, a threshold
    ~10 µs); only a flat distribution falls through to a full sort. Exact: a
    top set by threshold contains every top set of smaller size or weight."""
    mx = float(x.max())
    for cut in _CUTOFFS:
        ids = np.flatnonzero(x >= mx - cut)
        if len(ids) >= count and (mass <= 0.0 or float(np.exp(x[ids] - mx).sum(dtype=np.float64)) >= mass):
            return ids[np.argsort(-x[ids], kind="stable")]
    return np.argsort(-x, kind="stable")


def _nucleus(x: np.ndarray, top_p: float) -> np.ndarray:
    """The smallest set of highest-logit ids whose probability reaches top_p,
    without sorting the vocabulary: tokens within 8 nats of the top usually
    hold the nucleus, else the rest is searched too; candidates are bucketed
    by distance below the top (one np.bincount of their weights), buckets
    above the one where the mass crosses top_p are kept whole, and only that
    bucket is refined (finer buckets, then a sort of a few hundred ids, ties
    by id)."""
    d = float(x.max()) - x
    w = np.exp(-d)
    target = top_p * float(w.sum(dtype=np.float64))
    near = np.flatnonzero(d < 8.0)
    near_mass = float(w[near].sum(dtype=np.float64))
    kept: list[np.ndarray] = []
    if near_mass >= target:
        ring, lo, width, base = near, 0.0, 8.0 / 64, 0.0
    else:
        kept.append(near)
        ring, lo, width, base = np.flatnonzero(d >= 8.0), 8.0, 1.0, near_mass
    while len(ring) > 256 and width > 1e-6:
        bucket = np.minimum((d[ring] - lo) / width, 63.0).astype(np.int64)
        c = base + np.cumsum(np.bincount(bucket, weights=w[ring], minlength=64))
        k = min(int(np.searchsorted(c, target, side="left")), 63)
        kept.append(ring[bucket < k])
        base = c[k - 1] if k else base
        ring, lo, width = ring[bucket == k], lo + k * width, width / 64
    ring = ring[np.argsort(d[ring], kind="stable")]
    cr = base + np.cumsum(w[ring], dtype=np.float64)
    kept.append(ring[:min(int(np.searchsorted(cr, target, side="left")) + 1, len(ring))])
    return np.concatenate(kept)


def _kept(x: np.ndarray, p: SamplingParams) -> np.ndarray | None:
    """The ids top-k, top-p and min-p keep (None: all of them), as llama.cpp's
    chain does: each filter judges the untempered distribution left by the
    one before; temperature only shapes the draw among what they keep."""
    n = x.shape[0]
    mx = float(x.max())
    ids: np.ndarray | None = None
    if 0 < p.top_k < n:
        ids = _top_set(x, count=p.top_k)[:p.top_k]
    if p.top_p < 1.0:
        if ids is None:
            ids = _nucleus(x, p.top_p)
        else:
            w = np.exp(x[ids].astype(np.float64) - mx)
            c = np.cumsum(w)
            ids = ids[:min(int(np.searchsorted(c, p.top_p * c[-1], side="left")) + 1, len(ids))]
    if p.min_p > 0.0:
        floor = mx + math.log(p.min_p)
        ids = np.flatnonzero(x >= floor) if ids is None else ids[x[ids] >= floor]
    return ids


def sample_row(row: np.ndarray, state: SamplerState) -> int:
    """One token from one adjusted logits row (not greedy): filter, then draw
    with temperature among the kept tokens using one uniform number."""
    p = state.params
    ids = _kept(row, p)
    z = row if ids is None else row[ids]
    i = _draw(np.exp((z - z.max()) / np.float32(p.temperature)), state.rng.random())
    return i if ids is None else int(ids[i])


_BLOCK = 1024


def _draw(w: np.ndarray, u: float) -> int:
    """Index i with probability w[i] / sum(w), by inverse CDF at u in [0, 1).
    Two levels (block sums, then one block's prefix sums) so a whole
    vocabulary costs one pass, not a float64 cumsum of 49,152 entries."""
    n = w.shape[0]
    if n <= 4 * _BLOCK:
        c = np.cumsum(w, dtype=np.float64)
        return min(int(np.searchsorted(c, u * c[-1], side="right")), n - 1)
    cb = np.cumsum(np.add.reduceat(w, np.arange(0, n, _BLOCK), dtype=np.float64))
    target = u * cb[-1]
    b = min(int(np.searchsorted(cb, target, side="right")), len(cb) - 1)
    start = b * _BLOCK
    c = (cb[b - 1] if b else 0.0) + np.cumsum(w[start:start + _BLOCK], dtype=np.float64)
    return start + min(int(np.searchsorted(c, target, side="right")), len(c) - 1)


def _logprobs(raw: np.ndarray, token: int, n: int) -> tuple[float, list[tuple[int, float]]]:
    """Logprob of the chosen token and the n most likely, from a full
    log-softmax of the raw logits (what llama.cpp and OpenAI report)."""
    m = float(raw.max())
    lse = m + math.log(float(np.exp(raw - m).sum(dtype=np.float64)))
    top = _top_set(raw, count=n)[:n]
    return float(raw[token]) - lse, [(int(t), float(raw[t]) - lse) for t in top]


def sample_batch(logits: np.ndarray, states: Sequence[SamplerState]) -> list[TokenChoice]:
    """One token per row of logits [B, V], row b sampled with states[b].
    Records each chosen token in its state (penalty history)."""
    if logits.ndim != 2 or logits.shape[0] != len(states):
        raise SamplingError(f"logits shape {logits.shape} does not match {len(states)} sampler states")
    out: list[TokenChoice] = []
    adjusted = [s.adjust(logits[b]) for b, s in enumerate(states)]
    for b, s in enumerate(states):
        row = adjusted[b]
        tok = int(np.argmax(row)) if s.params.greedy else sample_row(row, s)
        choice = TokenChoice(tok)
        if s.params.logprobs:
            choice.logprob, choice.top = _logprobs(logits[b], tok, s.params.logprobs)
        s.accept(tok)
        out.append(choice)
    return out
