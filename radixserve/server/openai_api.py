"""POST /v1/completions and /v1/chat/completions, streaming (SSE) or not.

Both endpoints parse into a Job, submit its requests (one per prompt) to the
scheduler and drive their runner.Runs as one multirun.MultiRun; only the
response objects differ (openai_format). The request is
cancelled whenever its handler ends early: the client went away (a failed
write, or aiohttp cancelling the handler), or the server is stopping.
"""
from __future__ import annotations

import logging

from aiohttp import web

from scheduler.request import RequestError

from .errors import ApiError, bad_request
from .fields import read_json
from .keys import METRICS, STATE
from .openai_format import ChatFormat, CompletionFormat, Format
from .multirun import MultiRun
from .params import Job, parse_chat, parse_completion
from .runner import Delta, GenerationError, Run, TokenLogprob
from .sse import ClientGone, SSEWriter
from .state import Loaded

log = logging.getLogger("radixserve.requests")


async def completions(request: web.Request) -> web.StreamResponse:
    loaded = request.app[STATE].require()
    job = parse_completion(await read_json(request), loaded)
    return await _serve(request, loaded, job, CompletionFormat(loaded.tokenizer, loaded.model_name), "completions")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    loaded = state.require()
    job = parse_chat(await read_json(request), loaded, state.system_text)
    return await _serve(request, loaded, job, ChatFormat(loaded.tokenizer, loaded.model_name), "chat")


async def _serve(request: web.Request, loaded: Loaded, job: Job, fmt: Format, endpoint: str) -> web.StreamResponse:
    state = request.app[STATE]
    sched = loaded.scheduler
    if len(sched.waiting) >= state.config.max_waiting:
        raise ApiError(429, f"the queue is full ({len(sched.waiting)} requests waiting); retry later",
                       code="queue_full")
    handles = []
    try:
        for r in job.requests:
            handles.append(sched.submit(r))
    except RequestError as e:
        for h in handles:
            h.cancel()
        raise bad_request(str(e), code="invalid_request") from None
    run = MultiRun([Run(h, loaded.tokenizer, job.stop, job.logprobs) for h in handles], job.requests[0].n)
    outcome = "cancelled"
    try:
        if job.stream:
            response: web.StreamResponse = await _stream(request, run, job, fmt)
        else:
            response = await _collect(run, job, fmt)
        outcome = "ok" if all(run.finish_reasons) else "cancelled"  # a stream whose client left
        return response
    except GenerationError as e:
        outcome = "error"
        raise ApiError(500, str(e), code="engine_error") from None
    finally:
        for h in handles:
            h.cancel()
        _log_request(request, run, endpoint, fmt.id, outcome)


async def _collect(run: MultiRun, job: Job, fmt: Format) -> web.Response:
    n = job.n_choices
    texts: list[list[str]] = [[job.echo[i // run.n]] if job.echo else [] for i in range(n)]
    lps: list[list[TokenLogprob]] = [[] for _ in range(n)]
    async for d in run.deltas():
        texts[d.index].append(d.text)
        lps[d.index].extend(d.logprobs)
    body = fmt.full(["".join(t) for t in texts], lps if job.logprobs is not None else None,
                    run.finish_reasons, run.usage)
    return web.json_response(body)


async def _stream(request: web.Request, run: MultiRun, job: Job, fmt: Format) -> web.StreamResponse:
    sse = SSEWriter(request)
    try:
        await sse.start()
        for c in fmt.first_chunks(job.n_choices, job.include_usage):
            await sse.send(c)
        if job.echo:  # each choice opens with its prompt
            for i in range(job.n_choices):
                await sse.send(fmt.chunk(Delta(i, job.echo[i // run.n], []), job.include_usage))
        try:
            async for d in run.deltas():
                await sse.send(fmt.chunk(d, job.include_usage))
        except GenerationError as e:
            await sse.send(ApiError(500, str(e), code="engine_error").body())
        else:
            if job.include_usage:
                await sse.send(fmt.usage_chunk(run.usage))
        await sse.done()
    except ClientGone:
        pass  # nobody reads on; _serve cancels the request
    return sse.response


def _log_request(request: web.Request, run: MultiRun, endpoint: str, rid: str, outcome: str) -> None:
    u = run.usage
    elapsed = run.elapsed_s
    decode_s = elapsed - (u.first_token_s or 0.0)
    tok_s = (u.completion_tokens - 1) / decode_s if u.completion_tokens > 1 and decode_s > 0 else 0.0
    reasons = ",".join(r or "-" for r in run.finish_reasons)
    ttft = f"{u.first_token_s * 1000:.0f}ms" if u.first_token_s is not None else "-"
    log.info("%s %s prompt=%d cached=%d generated=%d ttft=%s tok/s=%.1f finish=%s outcome=%s time=%.2fs",
             rid, endpoint, u.prompt_tokens, u.cached_tokens, u.completion_tokens, ttft, tok_s, reasons,
             outcome, elapsed)
    request.app[METRICS].observe_request(endpoint, outcome, u.prompt_tokens, u.cached_tokens,
                                         u.completion_tokens, u.first_token_s, elapsed)
