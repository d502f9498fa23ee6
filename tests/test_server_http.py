"""The HTTP server with raw aiohttp and urllib: error shapes and statuses,
SSE framing, native endpoints, /v1/cache, /metrics, the OpenAPI document,
--api-key, and a client that disconnects mid-stream."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from radixserve.server import ServerConfig
from radixserve.server.openapi import document
from scheduler.config import SchedulerConfig
from server_util import ServerThread

CACHE_FIELDS = ("page_size", "pages_total", "pages_free", "pages_in_tree", "pages_private", "pages_locked",
                "pages_pinned", "pages_evictable", "query_tokens", "hit_tokens", "evicted_pages", "running",
                "waiting", "tree")


@pytest.fixture(scope="module")
def model_path(tiny_model):
    return str(tiny_model(weight_type="Q8_0", n_ctx=512, seed=7))


@pytest.fixture(scope="module")
def server(model_path):
    config = ServerConfig(model_path=model_path, threads=1, kv_pages=64, max_body_bytes=4096,
                          scheduler=SchedulerConfig(max_running=4, max_batch_tokens=64))
    with ServerThread(config) as s:
        yield s


def error_of(status_body, status, param=None, code=None):
    status_got, body = status_body
    assert status_got == status, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param
    if code is not None:
        assert err["code"] == code
    return err


@pytest.mark.parametrize("raw, param", [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'{"prompt": 5}', "prompt"),
    (b'{"prompt": "x", "max_tokens": "ten"}', "max_tokens"),
    (b'{"prompt": "x", "max_tokens": true}', "max_tokens"),
    (b'{"prompt": "x", "temperature": "hot"}', "temperature"),
    (b'{"prompt": "x", "n": 0}', "n"),
    (b'{"prompt": "x", "stream": "yes"}', "stream"),
    (b'{"prompt": "x", "stop": [""]}', "stop"),
    (b'{"prompt": "x", "logit_bias": {"a": 1}}', "logit_bias"),
    (b'{"prompt": "x", "top_p": 3}', "top_p"),
    (b'{"prompt": [1, 99999]}', "prompt"),
    (b'{"prompt": ["a", [1, 99999]]}', "prompt"),
    (b'{"prompt": ["a", ""]}', "prompt"),
    (b'{"prompt": ["a", 5]}', "prompt"),
    (b'{"prompt": [[]]}', "prompt"),
    (b'{"prompt": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",'
     b' "s", "t", "u", "v", "w", "x", "y", "z", "0", "1", "2", "3", "4", "5", "6"]}', "prompt"),
    (b'{"prompt": "x", "echo": true, "logprobs": 1}', "echo"),
])
def test_completion_bad_input_is_a_400(server, raw, param):
    error_of(server.request("POST", "/v1/completions", raw=raw), 400, param=param)


def test_chat_bad_messages(server):
    error_of(server.request("POST", "/v1/chat/completions", {"messages": "hi"}), 400, param="messages")
    error_of(server.request("POST", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}),
             400, param="messages")
    error_of(server.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                             "top_logprobs": 2}), 400, param="top_logprobs")


def test_too_long_prompt(server):
    err = error_of(server.request("POST", "/v1/completions", {"prompt": "z" * 600}), 400, param="prompt",
                   code="context_length_exceeded")
    assert "512" in err["message"]
    err = error_of(server.request("POST", "/v1/completions", {"prompt": ["a", "z" * 600]}), 400, param="prompt",
                   code="context_length_exceeded")
    assert "prompt[1]" in err["message"]
    server.invariants_when_idle()  # nothing of the batch was submitted


def test_unknown_model_route_method_and_big_body(server):
    error_of(server.request("POST", "/v1/completions", {"model": "nope", "prompt": "x"}), 404, param="model",
             code="model_not_found")
    error_of(server.request("GET", "/v1/nothing"), 404)
    error_of(server.request("GET", "/v1/completions"), 405)
    error_of(server.request("POST", "/v1/completions", {"prompt": "x" * 5000}), 413)


def test_sse_framing(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 5,
                    "ignore_eos": True, "stream_options": {"include_usage": True}}) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
                return (await r.read()).decode()
    text = asyncio.run(go())
    events = text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    assert "cached_tokens" in chunks[-1]["usage"]["prompt_tokens_details"]


def test_tokenize_detokenize_health_models(server):
    status, body = server.request("POST", "/tokenize", {"content": "hello <|im_end|>"})
    assert status == 200 and body["tokens"][-1] == 2
    status, back = server.request("POST", "/detokenize", {"tokens": body["tokens"]})
    assert status == 200 and back["content"] == "hello <|im_end|>"
    error_of(server.request("POST", "/tokenize", {"content": 3}), 400, param="content")
    error_of(server.request("POST", "/detokenize", {"tokens": ["a"]}), 400, param="tokens")
    assert server.request("GET", "/health") == (200, {"status": "ok"})
    status, models = server.request("GET", "/v1/models")
    assert status == 200 and models["data"][0]["id"].startswith("tiny_")


def test_cache_endpoint_and_metrics(server):
    prompt = "a shared prefix of more than one page, " * 2
    for _ in range(2):
        status, _ = server.request("POST", "/v1/completions", {"prompt": prompt, "max_tokens": 2})
        assert status == 200
    server.invariants_when_idle()
    status, cache = server.request("GET", "/v1/cache")
    assert status == 200 and all(f in cache for f in CACHE_FIELDS)
    assert cache["pages_total"] == 64 and cache["page_size"] == 16 and cache["hit_tokens"] > 0
    assert cache["pages_free"] + cache["pages_in_tree"] + cache["pages_private"] == cache["pages_total"]
    assert cache["tree"] and {"tokens", "pages", "lock_count", "pinned", "last_access"} <= set(cache["tree"][0])
    status, text = server.request("GET", "/metrics")
    assert status == 200
    for name in ("radixserve_requests_total", "radixserve_kv_pages{state=\"free\"}", "radixserve_cache_hit_rate",
                 "radixserve_requests_waiting", "radixserve_step_forward_seconds_bucket",
                 "radixserve_time_to_first_token_seconds_count"):
        assert name in text


def test_openapi_matches_routes(server):
    status, doc = server.request("GET", "/openapi.json")
    assert status == 200 and doc == json.loads(json.dumps(document()))
    routed = {(r.method.lower(), r.resource.canonical) for r in server.app.router.routes() if r.method != "HEAD"}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routed == documented


@pytest.mark.parametrize("prompt", ["tell me everything", ["tell me everything", "and then some more"]])
def test_disconnect_cancels_the_request(server, prompt):
    """A client gone mid-stream cancels its request (every prompt of a batch): no page stays held."""
    n_prompts = 1 if isinstance(prompt, str) else len(prompt)

    async def go():
        async with aiohttp.ClientSession() as s:
            r = await s.post(server.url + "/v1/completions", json={
                "prompt": prompt, "stream": True, "max_tokens": 400, "ignore_eos": True})
            got = 0
            async for line in r.content:
                got += line.startswith(b"data: ")
                if got == 3:
                    break
            r.close()  # drop the connection mid-stream
    before = server.request("GET", "/v1/cache")[1]["counters"]
    asyncio.run(go())
    stats = server.invariants_when_idle()
    assert stats["counters"]["cancelled"] == before["cancelled"] + n_prompts
    assert stats["counters"]["generated_tokens"] - before["generated_tokens"] < 400 * n_prompts
    assert stats["held_pages"] == 0


def test_api_key(model_path):
    with ServerThread(ServerConfig(model_path=model_path, threads=1, kv_pages=16, api_key="s3cret")) as s:
        assert s.request("GET", "/health")[0] == 200
        err = error_of(s.request("GET", "/v1/models"), 401, code="invalid_api_key")
        assert "Bearer" in err["message"]
        error_of(s.request("GET", "/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        error_of(s.request("GET", "/v1/nope", headers={"Authorization": "Bearer wrong"}), 401)
        assert s.request("GET", "/v1/models", headers={"Authorization": "Bearer s3cret"})[0] == 200
