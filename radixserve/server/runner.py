"""From a scheduler handle's token events to per-choice text deltas.

The scheduler speaks token ids; here each sample (choice) gets its own
incremental detokenizer (never half a UTF-8 character) and stop-string
matcher (stop strings across token boundaries, never shown). A stop string
ends its choice with "stop"; once every choice has ended the request is
cancelled, so its pages go back at the next step. Leaving the iteration early
(a client that went away, a handler cancelled) cancels the request too.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

from scheduler.request import FinishReason, RequestHandle, TokenEvent

from ..detokenizer import IncrementalDetokenizer
from ..stop_strings import StopStrings
from ..tokenizer import Tokenizer


class GenerationError(RuntimeError):
    """The engine failed on a batch that held this request."""


@dataclasses.dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclasses.dataclass(frozen=True, slots=True)
class Delta:
    """New text of one choice; the last delta of a choice carries its finish_reason."""

    index: int
    text: str
    logprobs: list[TokenLogprob]
    finish_reason: str | None = None


@dataclasses.dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int = 0
    first_token_s: float | None = None   # time to first token, from submission

    def as_dict(self) -> dict[str, object]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}


class _Choice:
    __slots__ = ("detok", "stops", "done", "pending")

    def __init__(self, tok: Tokenizer, stops: tuple[str, ...]) -> None:
        self.detok = IncrementalDetokenizer(tok)
        self.stops = StopStrings(stops)
        self.done = False
        self.pending: list[TokenLogprob] = []


class Run:
    """One request's stream of Deltas; `usage` and `finish_reasons` fill in as it goes."""

    def __init__(self, handle: RequestHandle, tok: Tokenizer, stops: tuple[str, ...],
                 logprobs: int | None) -> None:
        self.handle = handle
        self.tok = tok
        self.logprobs = logprobs
        n = handle.spec.n
        self.choices = [_Choice(tok, stops) for _ in range(n)]
        self.usage = Usage(prompt_tokens=len(handle.spec.prompt))
        self.finish_reasons: list[str | None] = [None] * n
        self.t0 = time.perf_counter()

    async def deltas(self) -> AsyncIterator[Delta]:
        try:
            async for ev in self.handle:
                delta = self._on_event(ev)
                if delta is not None:
                    yield delta
                if all(c.done for c in self.choices):
                    break
        finally:
            self.handle.cancel()  # no-op once every sample finished

    def _on_event(self, ev: TokenEvent) -> Delta | None:
        c = self.choices[ev.index]
        if c.done:
            return None  # a choice already ended by a stop string (its sample is being cancelled)
        if ev.index == 0 and ev.cached_tokens:
            self.usage.cached_tokens = ev.cached_tokens
        if ev.token is not None:
            return self._on_token(ev, c)
        if ev.finish_reason is FinishReason.ERROR:
            raise GenerationError(ev.error or "the engine failed")
        text = c.stops.push(c.detok.flush()) + c.stops.flush()
        reason = "length" if ev.finish_reason is FinishReason.LENGTH else "stop"
        return self._end(ev.index, c, text, reason)

    def _on_token(self, ev: TokenEvent, c: _Choice) -> Delta | None:
        assert ev.token is not None
        self.usage.completion_tokens += 1
        if self.usage.first_token_s is None:
            self.usage.first_token_s = time.perf_counter() - self.t0
        if self.logprobs is not None and ev.logprob is not None:
            c.pending.append(TokenLogprob(ev.token, ev.logprob, (ev.top_logprobs or [])[: self.logprobs]))
        if ev.token in self.handle.spec.stop_ids:
            return None  # the end-of-generation token itself is never text; the finish event follows
        text = c.stops.push(c.detok.push(ev.token))
        if c.stops.stopped:
            self.handle.cancel_sample(ev.index)  # its pages go back now; the other samples run on
            return self._end(ev.index, c, text, "stop")
        if not text and not c.pending:
            return None
        lps, c.pending = c.pending, []
        return Delta(ev.index, text, lps)

    def _end(self, index: int, c: _Choice, text: str, reason: str) -> Delta:
        c.done = True
        self.finish_reasons[index] = reason
        lps, c.pending = c.pending, []
        return Delta(index, text, lps, reason)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0
