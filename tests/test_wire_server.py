"""The msgpack socket front against a real server (tiny model, one loop
beside HTTP): multiplexing, streaming, cancel, identical greedy output to the
HTTP API, every kind of bad input (and hypothesis garbage) answered without
harming the connection or the server, drops that leak nothing, API keys,
the Unix socket, and `radixserve serve --socket-port`."""
from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radixserve.client import AsyncClient, Client, ServerError
from radixserve.server import ServerConfig
from scheduler.config import SchedulerConfig
from wire_util import RawConn, WireServerThread

MAX_FRAME = 4096


@pytest.fixture(scope="module")
def model_path(tiny_model):
    return str(tiny_model(weight_type="Q8_0", n_ctx=512, seed=7))


@pytest.fixture(scope="module")
def server(model_path):
    config = ServerConfig(model_path=model_path, threads=1, kv_pages=64, max_body_bytes=MAX_FRAME,
                          scheduler=SchedulerConfig(max_running=8, max_batch_tokens=64))
    with WireServerThread(config) as s:
        yield s


@pytest.fixture
def client(server):
    with Client(port=server.socket_port, timeout=30) as c:
        yield c


@pytest.fixture
def raw(server):
    conn = RawConn(server.socket_port)
    yield conn
    conn.close()


def assert_serving(raw: RawConn) -> None:
    raw.send({"type": "ping", "id": "alive"})
    assert raw.recv() == {"type": "pong", "id": "alive"}


def test_hello_ping_tokenize_detokenize_stats(client):
    assert client.server["version"] == 1 and client.server["max_frame_bytes"] == MAX_FRAME
    client.ping()
    ids = client.tokenize("hello world")
    assert client.detokenize(ids) == "hello world"
    assert client.detokenize(np.array(ids, dtype=np.int32)) == "hello world"  # bytes plus dtype
    stats = client.stats()
    assert stats["pages_total"] == 64 and "hit_rate" in stats


def test_greedy_output_identical_to_http(server, client):
    for prompt, extra in [("The quick brown fox", {}), ([1, 2, 3, 4, 5], {}),
                          ("hello", {"stop": ["\t"], "max_tokens": 20}),
                          ("abc", {"temperature": 0.8, "seed": 11, "top_k": 5})]:
        body = {"max_tokens": 12, "temperature": 0, "ignore_eos": True, **extra}
        status, http = server.request("POST", "/v1/completions", {"prompt": prompt, **body})
        assert status == 200, http
        out = client.generate(prompt, **body)
        assert out["text"] == http["choices"][0]["text"]
        assert out["finish_reason"] == http["choices"][0]["finish_reason"]
        assert out["usage"]["completion_tokens"] == http["usage"]["completion_tokens"]
        assert out["usage"]["prompt_tokens"] == http["usage"]["prompt_tokens"]
    status, http = server.request("POST", "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0, "ignore_eos": True})
    out = client.generate(messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0, ignore_eos=True)
    assert out["text"] == http["choices"][0]["message"]["content"]


def test_stream_tokens_then_done(client):
    events = list(client.stream("once", max_tokens=6, temperature=0, ignore_eos=True))
    tokens, done = events[:-1], events[-1]
    assert [e["type"] for e in tokens] == ["token"] * 6 and all(len(e["ids"]) == 1 for e in tokens)
    assert done["type"] == "done" and done["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 6
    full = client.generate("once", max_tokens=6, temperature=0, ignore_eos=True)
    assert [e["ids"][0] for e in tokens] == full["tokens"]
    assert "".join(e["text"] for e in tokens) == full["text"]
    ids_only = list(client.stream("once", max_tokens=6, temperature=0, ignore_eos=True, ids_only=True))
    assert all("text" not in e for e in ids_only) and [e["ids"][0] for e in ids_only[:-1]] == full["tokens"]
    again = client.generate("once", max_tokens=6, temperature=0, ignore_eos=True)
    assert again["usage"]["cached_tokens"] >= 0 and again["tokens"] == full["tokens"]


def test_concurrent_requests_multiplexed_on_one_connection(server):
    prompts = [f"prompt number {i} says" for i in range(12)]

    async def main():
        async with AsyncClient(port=server.socket_port) as c:
            solo = [await c.generate(p, max_tokens=8, temperature=0, ignore_eos=True) for p in prompts[:3]]
            t_events: list[tuple[float, int]] = []

            async def one(i: int, p: str):
                out = {"tokens": []}
                async with c.stream(p, max_tokens=8, temperature=0, ignore_eos=True, request_id=f"r{i}") as s:
                    async for ev in s:
                        t_events.append((time.perf_counter(), i))
                        if ev["type"] == "token":
                            out["tokens"] += ev["ids"]
                return out["tokens"]
            got = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
            return solo, got, t_events
    solo, got, t_events = asyncio.run(main())
    assert got[:3] == [s["tokens"] for s in solo]   # batching never changes an output
    assert all(len(g) == 8 for g in got)
    order = [i for _, i in sorted(t_events)]
    first_done = min(max(j for j, x in enumerate(order) if x == i) for i in range(len(prompts)))
    assert len(set(order[:first_done])) > 1          # interleaved, not one after another
    server.invariants_when_idle()


def test_cancel_by_id(server, client):
    it = client.stream("cancel me", max_tokens=400, temperature=0, ignore_eos=True, request_id="long")
    first = next(it)
    assert first["type"] == "token"
    client.cancel("long")
    rest = list(it)
    assert rest[-1]["type"] == "done" and rest[-1]["finish_reason"] == "cancelled"
    assert rest[-1]["usage"]["completion_tokens"] < 400
    client.cancel("no-such-request")   # ignored
    client.ping()
    server.invariants_when_idle()


def test_dropped_connection_cancels_its_requests(server):
    before = server.call(_counter(server, "cancelled"))
    raw = RawConn(server.socket_port)
    for i in range(4):
        raw.send({"type": "generate", "id": i, "prompt": f"drop {i}", "max_tokens": 480, "ignore_eos": True})
    assert raw.recv()["type"] == "token"
    raw.close()
    server.invariants_when_idle(timeout=20)  # page conservation, nothing left running
    assert server.call(_counter(server, "cancelled")) - before == 4


async def _counter(server, name):
    return getattr(server.state.loaded.scheduler.counters, name)


@pytest.mark.parametrize("send, code, field", [
    (lambda r: r.send_frame(b"\xc1\x00"), "bad_msgpack", None),
    (lambda r: r.send_frame(msgpack.packb({"type": "ping", "id": 1}) + b"\x01"), "bad_msgpack", None),
    (lambda r: r.send_frame(b""), "bad_msgpack", None),
    (lambda r: r.send([1, 2, 3]), "invalid_message", None),
    (lambda r: r.send({"type": "teleport", "id": 1}), "unknown_type", "type"),
    (lambda r: r.send({"type": "generate", "id": 1}), "missing_field", "prompt"),
    (lambda r: r.send({"type": "tokenize", "id": 1}), "missing_field", "text"),
    (lambda r: r.send({"type": "generate", "id": 1, "prompt": "x", "max_tokens": "many"}), "invalid_type",
     "max_tokens"),
    (lambda r: r.send({"type": "generate", "id": 1, "prompt": "x", "top_p": 3.0}), "invalid_value", "top_p"),
    (lambda r: r.send({"type": "generate", "id": 1, "prompt": "x", "colour": "red"}), "unknown_field", "colour"),
    (lambda r: r.send({"type": "generate", "id": 1, "prompt": [1, 999999]}), "invalid_token", "prompt"),
    (lambda r: r.send({"type": "generate", "id": 1, "prompt": "x", "logit_bias": {7777: 1}}), "invalid_token",
     "logit_bias"),
    (lambda r: r.send({"type": "generate", "id": 1, "prompt": "z" * 600}), "context_length_exceeded", "prompt"),
    (lambda r: r.send({"type": "detokenize", "id": 1, "ids": [300]}), "invalid_token", "ids"),
    (lambda r: r.send({"type": "set_system_prompt", "id": 1, "content": ""}), "invalid_value", "content"),
    (lambda r: r.send({"type": "hello", "id": 1, "version": 99}), "unsupported_version", "version"),
    (lambda r: r.send_frame(b"\x00" * (MAX_FRAME + 1)), "frame_too_large", None),
])
def test_bad_input_gets_its_error_and_the_connection_serves_on(raw, send, code, field):
    send(raw)
    err = raw.recv()
    assert err["type"] == "error" and err["code"] == code and err.get("field") == field, err
    assert err["message"]
    if code not in ("bad_msgpack", "invalid_message", "frame_too_large"):
        assert err["id"] == 1
    assert_serving(raw)


def test_duplicate_request_id(raw):
    raw.send({"type": "generate", "id": 7, "prompt": "dup", "max_tokens": 300, "ignore_eos": True})
    raw.send({"type": "generate", "id": 7, "prompt": "dup", "max_tokens": 3})
    seen = []
    while True:
        msg = raw.recv()
        seen.append(msg)
        if msg["type"] == "error":
            break
    assert msg == {"type": "error", "id": 7, "code": "duplicate_id", "field": "id", "message": msg["message"]}
    raw.send({"type": "cancel", "id": 7})
    while (msg := raw.recv())["type"] != "done":
        assert msg["type"] == "token" and msg["id"] == 7
    assert msg["finish_reason"] == "cancelled"
    raw.send({"type": "generate", "id": 7, "prompt": "dup", "max_tokens": 1})  # free again once done
    while (msg := raw.recv())["type"] != "done":
        pass
    assert_serving(raw)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(st.one_of(st.binary(max_size=80),
                                 st.dictionaries(st.sampled_from(["type", "id", "prompt", "text", "ids", "x"]),
                                                 st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                                                           st.floats(), st.text(max_size=8),
                                                           st.binary(max_size=8),
                                                           st.lists(st.integers(-5, 2**33), max_size=4)),
                                                 max_size=4).map(
                                     lambda d: msgpack.packb(d, use_bin_type=True) if _packable(d) else b"\xc1")),
                       min_size=1, max_size=4))
def test_garbage_frames_leave_the_server_serving(server, bodies):
    raw = RawConn(server.socket_port)
    try:
        for body in bodies:
            raw.send_frame(body)
        raw.send({"type": "ping", "id": "after"})
        while (msg := raw.recv()).get("id") != "after" or msg["type"] != "pong":
            assert msg["type"] in ("error", "pong", "tokens", "text", "system_prompt", "stats", "token", "done",
                                   "hello"), msg
    finally:
        raw.close()


def _packable(d) -> bool:
    try:
        msgpack.packb(d, use_bin_type=True)
        return True
    except (OverflowError, ValueError, TypeError):
        return False


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(min_size=1, max_size=200))
def test_unframed_junk_then_a_drop_leaves_other_connections_unaffected(server, raw, junk):
    bad = RawConn(server.socket_port)
    bad.send_raw(junk)
    bad.close()
    assert_serving(raw)


def test_system_prompt_over_the_socket(server, client):
    before = client.get_system_prompt()
    got = client.set_system_prompt("You are a terse assistant who answers in one word only, always.")
    assert got["type"] == "system_prompt" and got["content"].startswith("You are a terse")
    assert got["pinned_tokens"] > 0 and client.get_system_prompt() == got
    status, body = server.request("GET", "/v1/system_prompt")
    assert body["content"] == got["content"]           # one state shared with HTTP
    assert before["type"] == "system_prompt"


def test_client_timeout_cancels_the_request():
    """Against a server that answers hello and then nothing: the call times out and sends a cancel."""
    got: list[dict] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def silent_server() -> None:
        conn, _ = listener.accept()
        raw = RawConn.__new__(RawConn)
        raw.sock, raw.buf = conn, b""
        try:
            while True:
                msg = raw.recv()
                got.append(msg)
                if msg["type"] == "hello":
                    raw.send({"type": "hello", "id": msg["id"], "version": 1, "server": "silent", "model": "m",
                              "n_vocab": 1, "n_ctx": 1, "max_frame_bytes": 1 << 20})
        except (ConnectionError, OSError):
            conn.close()

    t = threading.Thread(target=silent_server, daemon=True)
    t.start()
    with Client(port=listener.getsockname()[1], timeout=5) as c:
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            c.generate("slow", max_tokens=10, timeout=0.2)
        assert 0.2 <= time.perf_counter() - t0 < 2
        with pytest.raises(TimeoutError):
            c.tokenize("x", timeout=0.05)
    t.join(5)
    listener.close()
    gen = next(msg for msg in got if msg["type"] == "generate")
    assert {"type": "cancel", "id": gen["id"]} in got


def test_client_raises_server_errors(client):
    with pytest.raises(ServerError) as e:
        client.generate("x", top_p=7.0)
    assert e.value.code == "invalid_value" and e.value.field == "top_p"
    with pytest.raises(ServerError) as e:
        client.tokenize("x" * (MAX_FRAME + 10))
    assert e.value.code == "frame_too_large"
    client.ping()


def test_api_key_and_unix_socket(model_path, tmp_path):
    path = str(tmp_path / "rs.sock")
    config = ServerConfig(model_path=model_path, threads=1, kv_pages=32, api_key="sesame")
    with WireServerThread(config, unix_path=path) as s:
        raw = RawConn(s.socket_port)
        raw.send({"type": "ping", "id": 1})
        assert raw.recv()["code"] == "unauthorized"
        raw.send({"type": "hello", "id": 2, "version": 1, "api_key": "wrong"})
        assert raw.recv() | {"message": ""} == {"type": "error", "id": 2, "code": "unauthorized", "field": "api_key",
                                                "message": ""}
        raw.send({"type": "hello", "id": 3, "version": 1, "api_key": "sesame"})
        assert raw.recv()["type"] == "hello"
        assert_serving(raw)
        raw.close()
        with pytest.raises(ServerError):
            Client(path=path, timeout=5).connect()
        with Client(path=path, api_key="sesame") as c:
            assert c.generate("unix", max_tokens=3, ignore_eos=True)["usage"]["completion_tokens"] == 3


def test_serve_flags_start_the_socket_front(model_path, tmp_path):
    from test_serve_cli import free_port
    http_port, sock_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "radixserve", "serve", "-m", model_path, "--port", str(http_port),
                             "--socket-port", str(sock_port), "--unix-socket", str(tmp_path / "s.sock"), "-t", "1",
                             "--kv-pages", "32", "--shutdown-grace", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with Client(port=sock_port, timeout=5, connect_timeout=1) as c:
                    out = c.generate("hi", max_tokens=2, ignore_eos=True)
                break
            except (OSError, ServerError):
                assert time.monotonic() < deadline and proc.poll() is None, "the server did not come up"
                time.sleep(0.1)
        assert out["usage"]["completion_tokens"] == 2
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, log
    assert f"tcp://127.0.0.1:{sock_port}" in log and "s.sock (msgpack protocol)" in log
    assert not (tmp_path / "s.sock").exists()
