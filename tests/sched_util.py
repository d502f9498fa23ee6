"""Helpers for scheduler tests: collect a request's events, build schedulers on tiny models."""
from __future__ import annotations

import dataclasses

import numpy as np

from radixserve.engine import Model
from scheduler.config import SchedulerConfig
from scheduler.request import FinishReason, RequestHandle
from scheduler.scheduler import Scheduler


@dataclasses.dataclass
class Outcome:
    tokens: dict[int, list[int]]
    finish: dict[int, FinishReason]
    cached: int
    errors: list[str]


async def collect(h: RequestHandle) -> Outcome:
    out = Outcome({}, {}, 0, [])
    async for ev in h:
        if ev.token is not None:
            out.tokens.setdefault(ev.index, []).append(ev.token)
        out.cached += ev.cached_tokens
        if ev.finish_reason is not None:
            out.finish[ev.index] = ev.finish_reason
        if ev.error:
            out.errors.append(ev.error)
    return out


def make_scheduler(model: Model, n_pages: int, page_size: int = 16, **cfg) -> Scheduler:
    return Scheduler(model, model.kv_store(n_pages=n_pages, page_size=page_size), SchedulerConfig(**cfg))


def rand_tokens(rng: np.random.Generator, n: int, vocab: int) -> list[int]:
    return [int(t) for t in rng.integers(3, vocab, n)]
