"""Requests as the scheduler sees them: token ids in, token events out.

A GenerateRequest asks for n samples of one prompt. Each sample is a
Sequence: its own page table, sampler and progress. The first sequence
prefills the prompt; the others fork from it when its prefill completes
(sharing its full pages through the tree, copying the partial last one).

Page table of a sequence (page_size = 4 here):

    positions  0..3  4..7  8..11 | 12..14  15..
    pages      [ t0 ][ t1 ][ t2 ] | [ p0  ][ p1 ]
               shared: tree pages  private: this sequence's own
               covered by `lock`   (partial page, decode pages)
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import time
from collections.abc import AsyncIterator, Hashable, Sequence as Seq

import numpy as np

from .handles import LockHandle
from .sampling import SamplerState, SamplingParams


class RequestError(ValueError):
    """A request that can never run (bad ids, too long, no room); the message says why."""


class FinishReason(str, enum.Enum):
    STOP = "stop"            # an end-of-generation id
    LENGTH = "length"        # max_tokens or the context length
    CANCELLED = "cancelled"  # the client cancelled or went away
    ERROR = "error"          # the engine failed on this batch


@dataclasses.dataclass(frozen=True, slots=True)
class GenerateRequest:
    prompt: Seq[int] | np.ndarray
    sampling: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    max_tokens: int = 256
    stop_ids: frozenset[int] = frozenset()  # end-of-generation ids (empty: ignore EOS)
    n: int = 1
    namespace: Hashable | None = None      # prefixes are shared only within one namespace
    cache_prompt: bool = True               # False: neither read nor write the prefix cache


@dataclasses.dataclass(frozen=True, slots=True)
class TokenEvent:
    """One generated token of sample `index`; the last one of a sample carries
    its finish_reason. cached_tokens: prompt tokens served from the cache."""

    index: int
    token: int | None
    finish_reason: FinishReason | None = None
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    cached_tokens: int = 0
    error: str | None = None


class SeqState(enum.Enum):
    WAITING = "waiting"      # queued (new, or preempted and requeued)
    FORKING = "forking"      # a sibling waiting for sample 0's prefill
    PREFILL = "prefill"      # admitted, prompt positions still to compute
    DECODE = "decode"        # one token per step
    DONE = "done"


_ids = itertools.count(1)


class Sequence:
    """One sample: its tokens, KV page table and sampler. Mutated only by the scheduler."""

    __slots__ = ("request", "index", "tokens", "n_prompt", "computed", "pages", "n_shared", "lock",
                 "sampler", "state", "admitted_step", "arrival", "cached_tokens", "n_generated",
                 "prefix_peek", "reported_cached", "cancelled")

    def __init__(self, request: "RequestHandle", index: int, sampler: SamplerState) -> None:
        self.request = request
        self.index = index
        self.tokens: list[int] = [int(t) for t in request.spec.prompt]
        self.n_prompt = len(self.tokens)       # grows when a preempted sequence is requeued
        self.computed = 0                      # positions whose K/V are in the pages
        self.pages: list[int] = []
        self.n_shared = 0                      # leading pages owned by the tree
        self.lock: LockHandle | None = None
        self.sampler = sampler
        self.state = SeqState.WAITING
        self.admitted_step = -1
        self.arrival = time.monotonic()
        self.cached_tokens = 0
        self.n_generated = 0
        self.prefix_peek = 0
        self.reported_cached = False
        self.cancelled = False  # this sample alone (RequestHandle.cancel_sample)

    @property
    def private_pages(self) -> list[int]:
        return self.pages[self.n_shared:]

    @property
    def next_token(self) -> int:
        return self.tokens[self.computed]


class RequestHandle:
    """What a front holds: an async stream of TokenEvents, and cancel()."""

    def __init__(self, spec: GenerateRequest, scheduler: object) -> None:
        self.id = next(_ids)
        self.spec = spec
        self._scheduler = scheduler
        self.events: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self.sequences: list[Sequence] = []
        self.open_samples = spec.n
        self.cancelled = False
        self.pin_on_finish = False  # a system prompt: pin its pages when its prefill ends

    def cancel(self) -> None:
        """Stop every sample; their pages are released at the next step boundary."""
        if not self.cancelled and self.open_samples:
            self.cancelled = True
            self._scheduler._wake()  # type: ignore[attr-defined]

    def cancel_sample(self, index: int) -> None:
        """Stop one sample of n (a stop string ended its text); the others run on."""
        if 0 <= index < len(self.sequences) and self.sequences[index].state is not SeqState.DONE:
            self.sequences[index].cancelled = True
            self._scheduler._wake()  # type: ignore[attr-defined]

    @property
    def finished(self) -> bool:
        return self.open_samples == 0

    def __aiter__(self) -> AsyncIterator[TokenEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TokenEvent]:
        remaining = self.spec.n
        while remaining:
            ev = await self.events.get()
            if ev.finish_reason is not None:
                remaining -= 1
            yield ev
