"""OpenAI request bodies -> one scheduler request plus what the front applies
itself (stop strings, streaming, logprobs format). Everything a client can get
wrong is caught here as a 400 naming the field; nothing reaches the scheduler
that it would refuse, except pool-size limits it alone knows."""
from __future__ import annotations

import dataclasses
from typing import Any

from scheduler.request import GenerateRequest
from scheduler.sampling import SamplingError, SamplingParams

from ..chat_template import ChatTemplateError
from .errors import ApiError, bad_request
from .fields import Body
from .state import Loaded

MAX_STOP_STRINGS = 16
MAX_LOGPROBS = 20
MAX_PROMPTS = 32   # prompts in one batched completion (each is its own scheduler request)


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """One parsed completion or chat request: one scheduler request per prompt
    (a completion may batch several; their choices are numbered prompt by
    prompt, n each, as OpenAI numbers them)."""

    requests: tuple[GenerateRequest, ...]
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    logprobs: int | None   # None: not asked; N: the chosen token's logprob plus the top N
    echo: tuple[str, ...] | None = None   # per prompt, the text that echo puts before its choices

    @property
    def request(self) -> GenerateRequest:
        """The request of a one-prompt job (chat, and the socket protocol's generate)."""
        assert len(self.requests) == 1
        return self.requests[0]

    @property
    def n_choices(self) -> int:
        return sum(r.n for r in self.requests)


def check_model(body: Body, loaded: Loaded) -> None:
    """`model` may be omitted, "default", or the served name; anything else is a 404."""
    name = body.str("model", None)
    if name is not None and name not in ("", "default", loaded.model_name):
        raise ApiError(404, f"the model {name!r} does not exist; this server serves {loaded.model_name!r}",
                       param="model", code="model_not_found")


def parse_completion(body: Body, loaded: Loaded) -> Job:
    check_model(body, loaded)
    if body.has("suffix"):
        raise bad_request("suffix is not supported", param="suffix")
    texts, prompts = _completion_prompts(body, loaded)
    n_logprobs = body.int("logprobs", None, 0, MAX_LOGPROBS)
    job = _job(body, loaded, prompts, n_logprobs, "prompt")
    if not body.bool("echo", False):
        return job
    if n_logprobs is not None:
        raise bad_request("echo with logprobs is not supported (no logprobs of prompt tokens)", param="echo")
    echo = tuple(t if t is not None else loaded.tokenizer.decode(p) for t, p in zip(texts, prompts))
    return dataclasses.replace(job, echo=echo)


def parse_chat(body: Body, loaded: Loaded, default_system: str | None) -> Job:
    check_model(body, loaded)
    messages = body.raw("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array of {role, content} objects", param="messages")
    if default_system and not any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": default_system}, *messages]
    try:
        prompt = loaded.template.encode(messages)
    except ChatTemplateError as e:
        raise bad_request(str(e), param="messages") from None
    n_logprobs = None
    if body.bool("logprobs", False):
        n_logprobs = body.int("top_logprobs", 0, 0, MAX_LOGPROBS)
    elif body.has("top_logprobs"):
        raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
    return _job(body, loaded, [prompt], n_logprobs, "messages")


def _completion_prompts(body: Body, loaded: Loaded) -> tuple[list[str | None], list[list[int]]]:
    """A string, token ids, or an array of either (a batch): per prompt, its
    text (None for token ids) and its tokens."""
    p = body.raw("prompt")
    if isinstance(p, str) or (isinstance(p, list) and p and all(_is_token(t) for t in p)):
        return [p if isinstance(p, str) else None], [_one_prompt(p, loaded, "prompt")]
    if not isinstance(p, list) or not p or not all(isinstance(x, (str, list)) for x in p):
        raise bad_request("prompt must be a non-empty string, an array of token ids, or an array of either",
                          param="prompt")
    if len(p) > MAX_PROMPTS:
        raise bad_request(f"prompt: at most {MAX_PROMPTS} prompts per request, got {len(p)}", param="prompt")
    prompts = [_one_prompt(x, loaded, f"prompt[{i}]") for i, x in enumerate(p)]
    return [x if isinstance(x, str) else None for x in p], prompts


def _is_token(t: Any) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)


def _one_prompt(p: Any, loaded: Loaded, where: str) -> list[int]:
    if isinstance(p, str):
        if not p:
            raise bad_request(f"{where} must not be empty", param="prompt")
        return loaded.tokenizer.encode(p, add_special=True, parse_special=True)
    if not isinstance(p, list) or not p or not all(_is_token(t) for t in p):
        raise bad_request(f"{where} must be a non-empty string or array of token ids", param="prompt")
    n_vocab = loaded.tokenizer.n_vocab
    bad = next((t for t in p if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise bad_request(f"{where}: token id {bad} is outside the vocabulary [0, {n_vocab})", param="prompt")
    return list(p)


def _job(body: Body, loaded: Loaded, prompts: list[list[int]], n_logprobs: int | None, prompt_param: str) -> Job:
    sched = loaded.scheduler
    tok = loaded.tokenizer
    limit = min(sched.n_ctx, sched.kv.n_pages * sched.page_size)
    longest = max(prompts, key=len)
    room = limit - len(longest)
    if room <= 0:
        which = "the prompt" if len(prompts) == 1 else f"prompt[{prompts.index(longest)}]"
        raise bad_request(f"{which} has {len(longest)} tokens; this server's context is {limit} tokens, "
                          "which leaves no room to generate", param=prompt_param, code="context_length_exceeded")
    max_tokens = body.int("max_completion_tokens", None, 0)
    if max_tokens is None:
        max_tokens = body.int("max_tokens", None, 0)
    n = body.int("n", 1, 1, sched.config.max_running)
    assert n is not None
    ignore_eos = body.bool("ignore_eos", False)
    sampling = _sampling(body, n_logprobs, tok.eog_ids if ignore_eos else frozenset())
    stream = body.bool("stream", False)
    options = body.obj("stream_options") or {}
    include_usage = Body(options).bool("include_usage", False) if options else False
    if options and not stream:
        raise bad_request("stream_options needs stream: true", param="stream_options")
    cache_prompt = body.bool("cache_prompt", True)
    requests = tuple(
        GenerateRequest(prompt=p, sampling=sampling,
                        max_tokens=limit - len(p) if max_tokens is None else min(max_tokens, limit - len(p)),
                        stop_ids=frozenset() if ignore_eos else tok.eog_ids, n=n, cache_prompt=cache_prompt)
        for p in prompts)
    return Job(requests, _stop_strings(body), stream, include_usage, n_logprobs)


def _sampling(body: Body, n_logprobs: int | None, banned: frozenset[int]) -> SamplingParams:
    bias: dict[int, float] = {}
    for k, v in (body.obj("logit_bias") or {}).items():
        try:
            token = int(k)
        except ValueError:
            raise bad_request(f"logit_bias keys must be token ids, got {k!r}", param="logit_bias") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -100 <= v <= 100:
            raise bad_request(f"logit_bias[{k}] must be a number in [-100, 100], got {v!r}", param="logit_bias")
        bias[token] = float(v)
    for t in banned:  # ignore_eos: the model never picks an end-of-generation token
        bias[t] = float("-inf")
    kw: dict[str, Any] = dict(
        temperature=body.number("temperature", 1.0),
        top_p=body.number("top_p", 1.0),
        top_k=body.int("top_k", 0),
        min_p=body.number("min_p", 0.0),
        presence_penalty=body.number("presence_penalty", 0.0),
        frequency_penalty=body.number("frequency_penalty", 0.0),
        repetition_penalty=body.number("repetition_penalty", 1.0),
        seed=body.int("seed", None),
        logit_bias=bias,
        logprobs=0 if n_logprobs is None else max(n_logprobs, 1),
    )
    try:
        return SamplingParams(**kw)
    except SamplingError as e:
        name = str(e).split()[0]
        raise bad_request(str(e), param=name if name in kw else None) from None


def _stop_strings(body: Body) -> tuple[str, ...]:
    stop = body.raw("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise bad_request("stop must be a non-empty string or an array of them", param="stop")
    if len(stop) > MAX_STOP_STRINGS:
        raise bad_request(f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stop)}", param="stop")
    return tuple(stop)
