"""The HTTP server driven by the official openai client on a tiny model:
completions, chat, streaming, n > 1, logprobs, seeds, stop strings, the
system prompt shared through the prefix cache."""
from __future__ import annotations

import concurrent.futures

import openai
import pytest

from radixserve.server import ServerConfig
from scheduler.config import SchedulerConfig
from server_util import ServerThread

SYSTEM = "You are a terse assistant who answers every question in one short line."


@pytest.fixture(scope="module")
def server(tiny_model):
    path = tiny_model(weight_type="Q8_0", n_ctx=512, seed=7)
    config = ServerConfig(model_path=str(path), served_model_name="tiny", threads=1, kv_pages=128,
                          scheduler=SchedulerConfig(max_running=8), system_prompt=SYSTEM)
    with ServerThread(config) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def chat(client, content, **kw):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}], **kw)


def test_completion_greedy_is_deterministic_and_reports_cache(client, server):
    prompt = "The quick brown fox jumps over the lazy dog. " * 2
    a = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0,
                                  extra_body={"ignore_eos": True})
    b = client.completions.create(model="default", prompt=prompt, max_tokens=12, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert a.object == "text_completion"
    assert a.choices[0].text == b.choices[0].text and a.choices[0].finish_reason == "length"
    ids = server.request("POST", "/tokenize", {"content": prompt, "add_special": True})[1]["tokens"]
    assert a.usage.completion_tokens == 12 and a.usage.prompt_tokens == len(ids)
    assert b.usage.prompt_tokens_details.cached_tokens > 0  # the first request left its pages in the tree
    server.invariants_when_idle()


def test_completion_token_prompt_and_max_tokens_zero(client):
    r = client.completions.create(model="tiny", prompt=[72, 101, 108, 108, 111], max_tokens=0)
    assert r.choices[0].text == "" and r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 0


def test_chat_stream_matches_non_stream(client):
    kw = dict(max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    full = chat(client, "Hello there!", **kw)
    stream = chat(client, "Hello there!", stream=True, stream_options={"include_usage": True}, **kw)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_n_samples_with_seed_are_reproducible(client):
    kw = dict(max_tokens=10, temperature=1.0, seed=1234, n=3, extra_body={"ignore_eos": True})
    a = chat(client, "Tell me a story", **kw)
    b = chat(client, "Tell me a story", **kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1  # each sample has its own seed
    assert a.usage.completion_tokens == 30


def test_streaming_n_samples(client):
    chunks = list(client.completions.create(model="tiny", prompt="abc", max_tokens=5, n=2, stream=True,
                                            temperature=0.7, seed=3, extra_body={"ignore_eos": True}))
    finished = sorted(c.choices[0].index for c in chunks if c.choices[0].finish_reason)
    assert finished == [0, 1]


def test_batched_prompts_are_numbered_prompt_by_prompt(client, server):
    """A batch of prompts over one shared prefix: choice i * n + j is prompt i's sample j, and each
    equals what that prompt alone gives (greedy), streamed or not."""
    shared = "Once upon a time in a land far away there lived a king. "
    prompts = [shared + "He said", shared + "She said", [72, 101, 108, 108, 111]]
    kw = dict(model="tiny", max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    alone = [client.completions.create(prompt=p, **kw) for p in prompts]
    batch = client.completions.create(prompt=prompts, n=2, **kw)
    assert [c.index for c in batch.choices] == list(range(6))
    assert [c.text for c in batch.choices] == [a.choices[0].text for a in alone for _ in range(2)]
    assert batch.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)  # once per prompt
    assert batch.usage.completion_tokens == 36
    chunks = list(client.completions.create(prompt=prompts, stream=True, **kw))
    texts = [""] * 3
    for c in chunks:
        texts[c.choices[0].index] += c.choices[0].text
    assert texts == [a.choices[0].text for a in alone]
    server.invariants_when_idle()


def test_echo_puts_the_prompt_first(client, server):
    kw = dict(model="tiny", max_tokens=4, temperature=0, extra_body={"ignore_eos": True})
    plain = client.completions.create(prompt="Echo me", **kw)
    echoed = client.completions.create(prompt=["Echo me", [72, 105]], echo=True, **kw)
    assert echoed.choices[0].text == "Echo me" + plain.choices[0].text
    ids_text = server.request("POST", "/detokenize", {"tokens": [72, 105]})[1]["content"]
    assert echoed.choices[1].text.startswith(ids_text) and len(echoed.choices[1].text) > len(ids_text)
    chunks = list(client.completions.create(prompt="Echo me", echo=True, stream=True, **kw))
    assert chunks[0].choices[0].text == "Echo me"
    assert "".join(c.choices[0].text for c in chunks) == echoed.choices[0].text


def test_logprobs(client):
    r = chat(client, "Hi", max_tokens=4, temperature=0, logprobs=True, top_logprobs=3,
             extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob)  # greedy picks the top one
    c = client.completions.create(model="tiny", prompt="Hi", max_tokens=3, temperature=0, logprobs=2,
                                  extra_body={"ignore_eos": True})
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 3
    assert all(len(t) <= 2 for t in lp.top_logprobs)


def test_stop_string_cuts_the_text(client):
    kw = dict(model="tiny", prompt="Once upon a time", max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    stop = full[6:9]
    assert stop and stop in full
    r = client.completions.create(stop=[stop], **kw)
    assert r.choices[0].text == full[: full.index(stop)] and r.choices[0].finish_reason == "stop"
    streamed = list(client.completions.create(stop=stop, stream=True, **kw))
    assert "".join(c.choices[0].text for c in streamed) == full[: full.index(stop)]


def test_models_and_unknown_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_bad_request_names_the_field(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "x", temperature=-1)
    assert e.value.param == "temperature"


def test_system_prompt_is_shared_and_rotates(client, server):
    status, body = server.request("GET", "/v1/system_prompt")
    assert status == 200 and body["content"] == SYSTEM and body["pinned_tokens"] >= 16

    def one(q):
        return chat(client, q, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        answers = list(ex.map(one, ["What is two plus two?", "Name a colour."]))
    assert all(a.usage.prompt_tokens_details.cached_tokens >= 16 for a in answers)

    new = "You are a pirate. Answer every question like a pirate would, with arr."
    status, body = server.request("PUT", "/v1/system_prompt", {"content": new})
    assert status == 200 and body["content"] == new and body["pinned_tokens"] >= 16
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        answers = list(ex.map(one, ["Where is the treasure?", "Which ship?"]))
    assert all(a.usage.prompt_tokens_details.cached_tokens >= body["pinned_tokens"] // 16 * 16 for a in answers)
    stats = server.invariants_when_idle()
    assert stats["pinned_pages"] == body["pinned_tokens"] // 16
    server.request("PUT", "/v1/system_prompt", {"content": SYSTEM})
