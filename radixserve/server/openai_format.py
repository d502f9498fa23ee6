"""OpenAI's response and chunk objects for completions and chat completions.

One Format per endpoint builds its objects from runner Deltas, so the
streaming and non-streaming paths of both endpoints share one driver.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from ..tokenizer import Tokenizer
from .runner import Delta, TokenLogprob, Usage


def _token_text(tok: Tokenizer, token: int) -> tuple[str, list[int]]:
    data = tok.token_bytes(token, special=True)
    return data.decode("utf-8", errors="replace"), list(data)


class Format:
    object_full: str
    object_chunk: str
    id_prefix: str

    def __init__(self, tok: Tokenizer, model_name: str) -> None:
        self.tok = tok
        self.model = model_name
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def chunk(self, delta: Delta, include_usage: bool) -> dict[str, Any]:
        out = self._envelope(self.object_chunk, [self._chunk_choice(delta)])
        if include_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        out = self._envelope(self.object_chunk, [])
        out["usage"] = usage.as_dict()
        return out

    def full(self, texts: list[str], logprobs: list[list[TokenLogprob]] | None, reasons: list[str | None],
             usage: Usage) -> dict[str, Any]:
        choices = [self._full_choice(i, texts[i], None if logprobs is None else logprobs[i], reasons[i])
                   for i in range(len(texts))]
        out = self._envelope(self.object_full, choices)
        out["usage"] = usage.as_dict()
        return out

    def first_chunks(self, n: int, include_usage: bool) -> list[dict[str, Any]]:
        return []

    def _chunk_choice(self, d: Delta) -> dict[str, Any]:
        raise NotImplementedError

    def _full_choice(self, i: int, text: str, lps: list[TokenLogprob] | None, reason: str | None) -> dict[str, Any]:
        raise NotImplementedError


class CompletionFormat(Format):
    object_full = object_chunk = "text_completion"
    id_prefix = "cmpl"

    def _logprobs(self, lps: list[TokenLogprob] | None) -> dict[str, Any] | None:
        if lps is None:
            return None
        tokens, offsets, offset = [], [], 0
        for lp in lps:
            text = _token_text(self.tok, lp.token)[0]
            tokens.append(text)
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": [lp.logprob for lp in lps],
                "top_logprobs": [{_token_text(self.tok, t)[0]: v for t, v in lp.top} for lp in lps],
                "text_offset": offsets}

    def _chunk_choice(self, d: Delta) -> dict[str, Any]:
        return {"index": d.index, "text": d.text, "logprobs": self._logprobs(d.logprobs if d.logprobs else None),
                "finish_reason": d.finish_reason}

    def _full_choice(self, i: int, text: str, lps: list[TokenLogprob] | None, reason: str | None) -> dict[str, Any]:
        return {"index": i, "text": text, "logprobs": self._logprobs(lps), "finish_reason": reason}


class ChatFormat(Format):
    object_full = "chat.completion"
    object_chunk = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def _logprobs(self, lps: list[TokenLogprob] | None) -> dict[str, Any] | None:
        if lps is None:
            return None
        content = []
        for lp in lps:
            text, data = _token_text(self.tok, lp.token)
            top = []
            for t, v in lp.top:
                ttext, tdata = _token_text(self.tok, t)
                top.append({"token": ttext, "logprob": v, "bytes": tdata})
            content.append({"token": text, "logprob": lp.logprob, "bytes": data, "top_logprobs": top})
        return {"content": content}

    def first_chunks(self, n: int, include_usage: bool) -> list[dict[str, Any]]:
        """OpenAI opens each choice's stream with the assistant role."""
        out = []
        for i in range(n):
            c = self._envelope(self.object_chunk, [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                    "logprobs": None, "finish_reason": None}])
            if include_usage:
                c["usage"] = None
            out.append(c)
        return out

    def _chunk_choice(self, d: Delta) -> dict[str, Any]:
        delta = {"content": d.text} if d.text or d.finish_reason is None else {}
        return {"index": d.index, "delta": delta, "logprobs": self._logprobs(d.logprobs if d.logprobs else None),
                "finish_reason": d.finish_reason}

    def _full_choice(self, i: int, text: str, lps: list[TokenLogprob] | None, reason: str | None) -> dict[str, Any]:
        return {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": self._logprobs(lps),
                "finish_reason": reason}
