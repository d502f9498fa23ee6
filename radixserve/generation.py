"""One completion on the engine, from prompt ids to text: prefill in chunks,
decode token by token, sample, detokenize incrementally, stop.

This is the single-stream path the CLI uses; the server batches many such
streams through the scheduler. Stop conditions, in the order checked after
each token: an end-of-generation id (unless ignore_eos), a stop string
(found across token boundaries, never part of the text), max_tokens, the
model's context length.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from scheduler.sampling import SamplerState, SamplingParams, sample_batch

from .detokenizer import IncrementalDetokenizer
from .engine import Model, SeqInput
from .stop_strings import StopStrings
from .tokenizer import Tokenizer

PREFILL_CHUNK = 512


class PromptTooLongError(ValueError):
    """The prompt leaves no room to generate within the model's context."""


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationConfig:
    max_tokens: int = 256
    sampling: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {self.max_tokens!r}")


@dataclasses.dataclass(slots=True)
class GenerationResult:
    prompt_tokens: list[int]
    tokens: list[int]
    text: str
    finish_reason: str          # "stop" (EOG id or stop string), "length", "cancelled"
    prefill_s: float
    decode_s: float

    @property
    def prefill_tok_s(self) -> float:
        return len(self.prompt_tokens) / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        # the first token comes from the prefill's logits; the rest each cost a step
        steps = max(len(self.tokens) - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0


def generate(model: Model, tokenizer: Tokenizer, prompt: Sequence[int], config: GenerationConfig,
             on_text: Callable[[str], None] | None = None) -> GenerationResult:
    """Generate one completion; on_text receives each text delta as it becomes final.
    A KeyboardInterrupt during decoding ends it with finish_reason "cancelled"."""
    prompt = list(prompt)
    n_ctx = model.n_ctx_train
    if not prompt:
        raise ValueError("the prompt is empty")
    if len(prompt) >= n_ctx:
        raise PromptTooLongError(f"the prompt has {len(prompt)} tokens; the model's context is {n_ctx}")
    config.sampling.check_vocab(model.n_vocab)
    budget = min(config.max_tokens, n_ctx - len(prompt))
    kv = model.kv_store(n_pages=-(-(len(prompt) + budget) // 16), page_size=16)
    pages = np.arange(kv.n_pages, dtype=np.int32)
    state = SamplerState(config.sampling, prompt, default_seed=int(time.time_ns()) & 0xFFFFFFFF)
    detok = IncrementalDetokenizer(tokenizer)
    stops = StopStrings(config.stop)
    eog = frozenset() if config.ignore_eos else tokenizer.eog_ids
    pieces: list[str] = []

    def emit(text: str) -> None:
        if text:
            pieces.append(text)
            if on_text:
                on_text(text)

    t0 = time.perf_counter()
    logits = None
    for a in range(0, len(prompt), PREFILL_CHUNK):
        part = prompt[a:a + PREFILL_CHUNK]
        last = a + len(part) == len(prompt)
        logits = model.forward(kv, [SeqInput(part, a, pages, want_logits=last)])
    prefill_s = time.perf_counter() - t0
    assert logits is not None
    tokens: list[int] = []
    finish = "length"
    t1 = time.perf_counter()
    try:
        while True:
            if config.ignore_eos and tokenizer.eog_ids:
                logits = logits.copy()
                logits[:, list(tokenizer.eog_ids)] = -np.inf
            tok = sample_batch(logits, [state])[0].token
            tokens.append(tok)
            if tok in eog:
                finish = "stop"
                break
            emit(stops.push(detok.push(tok)))
            if stops.stopped:
                finish = "stop"
                break
            if len(tokens) >= budget:
                break
            logits = model.forward(kv, [SeqInput([tok], len(prompt) + len(tokens) - 1, pages)])
    except KeyboardInterrupt:
        finish = "cancelled"
    if not stops.stopped:
        emit(stops.push(detok.flush()))
        emit(stops.flush())
    return GenerationResult(prompt, tokens, "".join(pieces), finish, prefill_s, time.perf_counter() - t1)
