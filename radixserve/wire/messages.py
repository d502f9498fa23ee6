"""Every message of protocol version 1, as a frozen dataclass. The class
attribute TYPE is the value of the "type" field on the wire; each field's
kind (kinds.py) is its wire type and validator. docs/protocol.md is the prose
version of this file.

Requests (client -> server) all carry the client's `id`; every answer to a
request carries the same id. A generate is answered by any number of `token`
messages and exactly one terminal message: `done`, or `error`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from . import kinds as k

PROTOCOL_VERSION = 1


def wire(kind: k.Kind, default: Any = dataclasses.MISSING) -> Any:
    """A field of kind `kind`; without a default it is required."""
    return dataclasses.field(default=default, metadata={"kind": kind})


_msg = dataclasses.dataclass(frozen=True, slots=True, kw_only=True)


class Message:
    __slots__ = ()
    TYPE: ClassVar[str]


# ---------------------------------------------------------------- requests


@_msg
class Hello(Message):
    TYPE = "hello"
    id: int | str = wire(k.request_id)
    version: int = wire(k.integer(0))
    api_key: str | None = wire(k.string, None)
    client: str | None = wire(k.string, None)


@_msg
class Ping(Message):
    TYPE = "ping"
    id: int | str = wire(k.request_id)


@_msg
class Generate(Message):
    """Exactly one of prompt (text, or token ids used as they are) and messages (rendered by the chat template)."""

    TYPE = "generate"
    id: int | str = wire(k.request_id)
    prompt: str | list[int] | None = wire(k.text_or_ids, None)
    messages: list[dict[str, str]] | None = wire(k.chat_messages, None)
    max_tokens: int | None = wire(k.integer(0), None)
    temperature: float | None = wire(k.number, None)
    top_p: float | None = wire(k.number, None)
    top_k: int | None = wire(k.integer(0), None)
    min_p: float | None = wire(k.number, None)
    presence_penalty: float | None = wire(k.number, None)
    frequency_penalty: float | None = wire(k.number, None)
    repetition_penalty: float | None = wire(k.number, None)
    seed: int | None = wire(k.integer(), None)
    logit_bias: dict[int, float] | None = wire(k.token_bias, None)
    stop: list[str] | None = wire(k.strings, None)
    ignore_eos: bool | None = wire(k.boolean, None)
    n: int | None = wire(k.integer(1), None)
    cache_prompt: bool | None = wire(k.boolean, None)
    ids_only: bool | None = wire(k.boolean, None)


@_msg
class Cancel(Message):
    """Cancel the generate whose id is `id`. Unknown or finished ids are ignored (no answer)."""

    TYPE = "cancel"
    id: int | str = wire(k.request_id)


@_msg
class Tokenize(Message):
    TYPE = "tokenize"
    id: int | str = wire(k.request_id)
    text: str = wire(k.string)
    add_special: bool | None = wire(k.boolean, None)
    parse_special: bool | None = wire(k.boolean, None)


@_msg
class Detokenize(Message):
    TYPE = "detokenize"
    id: int | str = wire(k.request_id)
    ids: list[int] = wire(k.token_ids)


@_msg
class GetSystemPrompt(Message):
    TYPE = "get_system_prompt"
    id: int | str = wire(k.request_id)


@_msg
class SetSystemPrompt(Message):
    TYPE = "set_system_prompt"
    id: int | str = wire(k.request_id)
    content: str = wire(k.string)


@_msg
class Stats(Message):
    TYPE = "stats"
    id: int | str = wire(k.request_id)


# ---------------------------------------------------------------- answers


@_msg
class HelloReply(Message):
    TYPE = "hello"
    id: int | str = wire(k.request_id)
    version: int = wire(k.integer(0))
    server: str = wire(k.string)
    model: str = wire(k.string)
    n_vocab: int = wire(k.integer(0))
    n_ctx: int = wire(k.integer(0))
    max_frame_bytes: int = wire(k.integer(0))


@_msg
class Pong(Message):
    TYPE = "pong"
    id: int | str = wire(k.request_id)


@_msg
class Token(Message):
    """New tokens of sample `index`; `text` is absent when the request asked ids_only."""

    TYPE = "token"
    id: int | str = wire(k.request_id)
    index: int = wire(k.integer(0))
    ids: list[int] = wire(k.token_ids)
    text: str | None = wire(k.string, None)


@_msg
class Done(Message):
    TYPE = "done"
    id: int | str = wire(k.request_id)
    finish_reason: str = wire(k.string)
    finish_reasons: list[str] = wire(k.strings)
    usage: dict[str, int] = wire(k.any_map)


@_msg
class TokenIds(Message):
    TYPE = "tokens"
    id: int | str = wire(k.request_id)
    ids: list[int] = wire(k.token_ids)


@_msg
class Text(Message):
    TYPE = "text"
    id: int | str = wire(k.request_id)
    text: str = wire(k.string)


@_msg
class SystemPrompt(Message):
    TYPE = "system_prompt"
    id: int | str = wire(k.request_id)
    content: str | None = wire(k.string, None)
    tokens: int = wire(k.integer(0))
    pinned_tokens: int = wire(k.integer(0))


@_msg
class StatsReply(Message):
    TYPE = "stats"
    id: int | str = wire(k.request_id)
    stats: dict[str, Any] = wire(k.any_map)


@_msg
class Error(Message):
    """`id` absent: about the connection (the frame could not be read as a message)."""

    TYPE = "error"
    id: int | str | None = wire(k.request_id, None)
    code: str = wire(k.string)
    message: str = wire(k.string)
    field: str | None = wire(k.string, None)


REQUESTS: dict[str, type[Message]] = {c.TYPE: c for c in (
    Hello, Ping, Generate, Cancel, Tokenize, Detokenize, GetSystemPrompt, SetSystemPrompt, Stats)}
ANSWERS: dict[str, type[Message]] = {c.TYPE: c for c in (
    HelloReply, Pong, Token, Done, TokenIds, Text, SystemPrompt, StatsReply, Error)}
