"""A generate message to a scheduler request, and its token events to wire
messages. Parsing goes through the HTTP front's own parser (server/params.py)
so the same request gives the same GenerateRequest, hence the same tokens,
on both fronts; its 400s come back as WireErrors naming the same field."""
from __future__ import annotations

from typing import Any

from scheduler.request import FinishReason, TokenEvent

from ..server.errors import ApiError
from ..server.fields import Body
from ..server.params import Job, parse_chat, parse_completion
from ..server.runner import Delta, Run
from ..server.state import Loaded
from .errors import Code, WireError
from .messages import Done, Generate, Message, Token

_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
             "repetition_penalty", "seed", "logit_bias", "stop", "ignore_eos", "n", "cache_prompt")
_CODES = {c.value for c in Code}


def from_api_error(e: ApiError) -> WireError:
    code = Code(e.code) if e.code in _CODES else Code.INVALID_VALUE
    if e.status == 429:
        code = Code.QUEUE_FULL
    return WireError(code, e.message, field=e.param)


def check_vocab(ids: list[int], n_vocab: int, field: str) -> None:
    for i, t in enumerate(ids):
        if not 0 <= t < n_vocab:
            raise WireError(Code.INVALID_TOKEN, f"{field}[{i}]: token id {t} is outside the vocabulary [0, {n_vocab})",
                            field=field)


def request_error_field(message: str) -> str:
    """The field a scheduler RequestError is about (its messages name them)."""
    for name in ("logit_bias", "max_tokens", "n must"):
        if name in message:
            return name.split()[0]
    return "prompt"


def parse(msg: Generate, loaded: Loaded, default_system: str | None) -> Job:
    """The scheduler request and front options of a generate; WireError names the bad field."""
    if (msg.prompt is None) == (msg.messages is None):
        raise WireError(Code.MISSING_FIELD if msg.prompt is None else Code.INVALID_VALUE,
                        "generate needs exactly one of prompt and messages", field="prompt")
    if msg.logit_bias:
        check_vocab(list(msg.logit_bias), loaded.tokenizer.n_vocab, "logit_bias")
    body: dict[str, Any] = {name: getattr(msg, name) for name in _SAMPLING if getattr(msg, name) is not None}
    if msg.prompt is not None:
        if not msg.prompt:
            raise WireError(Code.INVALID_VALUE, "prompt must not be empty", field="prompt")
        if isinstance(msg.prompt, list):
            check_vocab(msg.prompt, loaded.tokenizer.n_vocab, "prompt")
        body["prompt"] = msg.prompt
    else:
        body["messages"] = msg.messages
    try:
        if msg.prompt is not None:
            return parse_completion(Body(body), loaded)
        return parse_chat(Body(body), loaded, default_system)
    except ApiError as e:
        raise from_api_error(e) from None


class WireRun(Run):
    """A Run fed one event at a time: the socket sends every token id as it
    comes, with whatever text it completes (possibly none, while a character
    or a possible stop string is incomplete)."""

    def __init__(self, job: Job, handle: Any, loaded: Loaded, rid: int | str, ids_only: bool) -> None:
        super().__init__(handle, loaded.tokenizer, job.stop, None)
        self.rid = rid
        self.ids_only = ids_only

    @property
    def finished(self) -> bool:
        return all(c.done for c in self.choices)

    def on_event(self, ev: TokenEvent) -> Message | None:
        """The wire message for one event (None: nothing to say). Raises GenerationError."""
        c = self.choices[ev.index]
        if c.done:
            return None
        if ev.finish_reason is FinishReason.CANCELLED:
            c.done = True
            self.finish_reasons[ev.index] = "cancelled"
            return None
        delta: Delta | None = self._on_event(ev)
        text = delta.text if delta is not None else ""
        if ev.token is not None:
            return Token(id=self.rid, index=ev.index, ids=[ev.token], text=None if self.ids_only else text)
        if text and not self.ids_only:
            return Token(id=self.rid, index=ev.index, ids=[], text=text)
        return None

    def done(self) -> Done:
        reasons = [r or "cancelled" for r in self.finish_reasons]
        u = self.usage
        usage = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                 "total_tokens": u.prompt_tokens + u.completion_tokens, "cached_tokens": u.cached_tokens}
        return Done(id=self.rid, finish_reason=reasons[0], finish_reasons=reasons, usage=usage)
