"""Clients of the msgpack socket protocol (docs/protocol.md).

AsyncClient and Client (blocking) have the same shape. One connection,
opened on first use (or by connect()) and reused by every call; many
requests may be in flight on it at once, each routed back by its id.

    with Client(port=8081) as c:
        out = c.generate("The capital of France is", max_tokens=8, temperature=0)
        out["text"], out["tokens"], out["finish_reason"], out["usage"]["cached_tokens"]
        for ev in c.stream("Once upon a time", max_tokens=32):
            print(ev.get("text", ""), end="")

A refusal raises ServerError carrying the server's code, message and field;
a call that outlives its timeout cancels its request and raises TimeoutError;
a lost connection fails the calls in flight with ConnectionError (the next
call reconnects).
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .wire import codec
from .wire import messages as m
from .wire.framing import MAX_REPLY_BYTES, FrameDecoder, Oversized

__all__ = ["AsyncClient", "AsyncStream", "Client", "ServerError"]

_CLOSED = object()


class _Inbox:
    """Answers to one request, in order. Cheaper than asyncio.Queue under
    wait_for (no task per wait): a waiter future and a timer only when empty."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, item: Any) -> None:
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self, timeout: float | None) -> Any:
        if not self.items:
            loop = asyncio.get_running_loop()
            self.waiter = waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self.waiter = None
                if timer is not None:
                    timer.cancel()
        return self.items.popleft()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no answer from the server within the timeout"))


class ServerError(Exception):
    """The server refused a request: its error code, message, the bad field and the request id."""

    def __init__(self, code: str, message: str, field: str | None = None, id: Any = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field
        self.id = id


def _wire_ids(ids: Sequence[int] | np.ndarray) -> Any:
    """Token ids as sent: a numpy array travels as bytes plus dtype, a list as a msgpack array."""
    if isinstance(ids, np.ndarray):
        arr = np.ascontiguousarray(ids, dtype="<i4")
        return {"dtype": "<i4", "data": arr.tobytes()}
    return list(ids)


def _event(msg: m.Message) -> dict[str, Any]:
    d = codec.to_map(msg)
    d.pop("id", None)
    return d


class AsyncStream:
    """One generate's events: {"type": "token", index, ids, text?} ... then
    {"type": "done", finish_reason, finish_reasons, usage}. Leaving an
    `async with` block before the end cancels the request."""

    def __init__(self, client: "AsyncClient", msg: m.Generate, timeout: float | None) -> None:
        self.client = client
        self.id = msg.id
        self._msg = msg
        self._timeout = timeout
        self._queue: _Inbox | None = None
        self.finished = False

    async def _start(self) -> None:
        if self._queue is None:
            self._queue = await self.client._send_request(self._msg)

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.finished:
            raise StopAsyncIteration
        await self._start()
        assert self._queue is not None
        try:
            msg = await self.client._next(self._queue, self._timeout)
        except BaseException:
            await self.aclose()
            raise
        if isinstance(msg, m.Token):
            return _event(msg)
        self.finished = True
        self.client._routes.pop(self.id, None)
        if isinstance(msg, m.Error):
            raise ServerError(msg.code, msg.message, msg.field, msg.id)
        return _event(msg)

    async def cancel(self) -> None:
        """Ask the server to stop; the stream then ends with finish_reason "cancelled"."""
        if not self.finished and self._queue is not None:
            await self.client.cancel(self.id)

    async def aclose(self) -> None:
        if not self.finished:
            self.finished = True
            if self._queue is not None:
                self.client._routes.pop(self.id, None)
                await self.client.cancel(self.id)

    async def __aenter__(self) -> "AsyncStream":
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Protocol(asyncio.Protocol):
    """Frames in, routed to the waiting calls by id, straight from the loop's callback (no reader task)."""

    def __init__(self, client: "AsyncClient") -> None:
        self.client = client
        self.decoder = FrameDecoder(MAX_REPLY_BYTES)
        self.transport: asyncio.Transport | None = None
        self.error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            for frame in self.decoder.feed(data):
                if isinstance(frame, Oversized):
                    raise ConnectionError(f"the server sent a frame of {frame.length} bytes")
                self.client._on_frame(frame)
        except Exception as e:  # an unreadable answer: the stream is no longer trustworthy
            self.error = e if isinstance(e, ConnectionError) else ConnectionError(f"unreadable answer: {e}")
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.client._on_lost(self.transport, self.error or exc)


class AsyncClient:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, path: str | None = None,
                 api_key: str | None = None, timeout: float | None = 60.0, connect_timeout: float = 10.0) -> None:
        if (port is None) == (path is None):
            raise ValueError("give exactly one of port (TCP) and path (Unix socket)")
        self.host, self.port, self.path = host, port, path
        self.api_key = api_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.server: dict[str, Any] | None = None   # the hello answer: version, model, n_vocab, n_ctx, max_frame_bytes
        self._ids = itertools.count(1)
        self._routes: dict[Any, _Inbox] = {}
        self._transport: asyncio.Transport | None = None
        self._last_error: ServerError | None = None
        self._lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.connected:
                return
            loop = asyncio.get_running_loop()
            if self.path is not None:
                opening = loop.create_unix_connection(lambda: _Protocol(self), self.path)
            else:
                opening = loop.create_connection(lambda: _Protocol(self), self.host, self.port)
            transport, _ = await asyncio.wait_for(opening, self.connect_timeout)
            self._transport = transport
            hello = m.Hello(id=next(self._ids), version=m.PROTOCOL_VERSION, api_key=self.api_key,
                            client="radixserve.client")
            queue = self._route(hello.id)
            transport.write(codec.encode(hello))
            try:
                reply = await self._answer(queue, hello.id, self.connect_timeout)
            except BaseException:
                transport.close()
                raise
            self.server = _event(reply)

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            self._on_lost(transport, ConnectionError("the client was closed"))

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_frame(self, frame: bytes) -> None:
        msg = codec.decode(frame, m.ANSWERS, strict=False)
        queue = self._routes.get(getattr(msg, "id", None))
        if queue is not None:
            queue.put(msg)
        elif isinstance(msg, m.Error) and msg.id is None:
            self._last_error = ServerError(msg.code, msg.message, msg.field)

    def _on_lost(self, transport: asyncio.BaseTransport, error: BaseException | None) -> None:
        """Fail every call in flight on this connection (the next call reconnects)."""
        if self._transport is not None and self._transport is not transport:
            return  # an old connection, closed after a reconnect: its calls were failed by close()
        self._transport = None
        err = error or self._last_error or ConnectionError("the server closed the connection")
        for q in self._routes.values():
            q.put((_CLOSED, err))
        self._routes.clear()

    # ------------------------------------------------------------------ requests

    def _route(self, rid: Any) -> _Inbox:
        q = _Inbox()
        self._routes[rid] = q
        return q

    async def _send_request(self, msg: m.Message) -> _Inbox:
        if not self.connected:
            await self.connect()
        frame = codec.encode(msg)
        limit = (self.server or {}).get("max_frame_bytes")
        if limit is not None and len(frame) - 4 > limit:
            raise ServerError("frame_too_large", f"the request is {len(frame) - 4} bytes; the server takes "
                              f"at most {limit}", id=getattr(msg, "id", None))
        rid = getattr(msg, "id")
        if rid in self._routes:
            raise ValueError(f"request id {rid!r} is already in flight on this client")
        queue = self._route(rid)
        assert self._transport is not None
        self._transport.write(frame)
        return queue

    async def _next(self, queue: _Inbox, timeout: float | None) -> m.Message:
        item = await queue.get(timeout)
        if isinstance(item, tuple) and item[0] is _CLOSED:
            raise item[1]
        return item

    async def _answer(self, queue: _Inbox, rid: Any, timeout: float | None) -> m.Message:
        try:
            msg = await self._next(queue, timeout)
        finally:
            self._routes.pop(rid, None)
        if isinstance(msg, m.Error):
            raise ServerError(msg.code, msg.message, msg.field, msg.id)
        return msg

    async def _call(self, msg: m.Message, timeout: float | None = None) -> m.Message:
        queue = await self._send_request(msg)
        return await self._answer(queue, getattr(msg, "id"), self.timeout if timeout is None else timeout)

    def _generate_msg(self, prompt: Any, request_id: Any, params: dict[str, Any]) -> m.Generate:
        rid = next(self._ids) if request_id is None else request_id
        if prompt is not None and not isinstance(prompt, str):
            prompt = _wire_ids(prompt)
        return m.Generate(id=rid, prompt=prompt, **params)

    def stream(self, prompt: str | Sequence[int] | np.ndarray | None = None, *, request_id: Any = None,
               timeout: float | None = None, **params: Any) -> AsyncStream:
        """Events of one generate as they come. params: messages, max_tokens, temperature, top_p, top_k,
        min_p, *_penalty, seed, logit_bias, stop, ignore_eos, n, cache_prompt, ids_only.
        timeout: the longest wait for the next event."""
        return AsyncStream(self, self._generate_msg(prompt, request_id, params),
                           self.timeout if timeout is None else timeout)

    async def generate(self, prompt: str | Sequence[int] | np.ndarray | None = None, *, request_id: Any = None,
                       timeout: float | None = None, **params: Any) -> dict[str, Any]:
        """The whole answer: {"id", "text", "tokens", "finish_reason", "usage"} (and "choices" when n > 1)."""
        s = self.stream(prompt, request_id=request_id, timeout=None, **params)
        try:
            return await asyncio.wait_for(self._collect(s), self.timeout if timeout is None else timeout)
        except asyncio.TimeoutError:
            await s.aclose()
            raise TimeoutError(f"generate {s.id!r} took longer than its timeout") from None

    async def _collect(self, s: AsyncStream) -> dict[str, Any]:
        texts: dict[int, list[str]] = {}
        tokens: dict[int, list[int]] = {}
        async for ev in s:
            if ev["type"] == "token":
                texts.setdefault(ev["index"], []).append(ev.get("text", ""))
                tokens.setdefault(ev["index"], []).extend(ev["ids"])
                continue
            n = len(ev["finish_reasons"])
            choices = [{"text": "".join(texts.get(i, [])), "tokens": tokens.get(i, []),
                        "finish_reason": ev["finish_reasons"][i]} for i in range(n)]
            out = {"id": s.id, **choices[0], "usage": ev["usage"]}
            if n > 1:
                out["choices"] = choices
            return out
        raise ConnectionError("the stream ended without a done message")

    async def cancel(self, request_id: Any) -> None:
        if self.connected:
            assert self._transport is not None
            self._transport.write(codec.encode(m.Cancel(id=request_id)))

    async def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True,
                       timeout: float | None = None) -> list[int]:
        reply = await self._call(m.Tokenize(id=next(self._ids), text=text, add_special=add_special,
                                            parse_special=parse_special), timeout)
        return reply.ids  # type: ignore[attr-defined, no-any-return]

    async def detokenize(self, ids: Sequence[int] | np.ndarray, *, timeout: float | None = None) -> str:
        reply = await self._call(m.Detokenize(id=next(self._ids), ids=_wire_ids(ids)), timeout)
        return reply.text  # type: ignore[attr-defined, no-any-return]

    async def get_system_prompt(self, *, timeout: float | None = None) -> dict[str, Any]:
        return _event(await self._call(m.GetSystemPrompt(id=next(self._ids)), timeout))

    async def set_system_prompt(self, content: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Answers once the new prefix is prefilled and pinned."""
        return _event(await self._call(m.SetSystemPrompt(id=next(self._ids), content=content), timeout))

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        reply = await self._call(m.Stats(id=next(self._ids)), timeout)
        return reply.stats  # type: ignore[attr-defined, no-any-return]

    async def ping(self, *, timeout: float | None = None) -> None:
        await self._call(m.Ping(id=next(self._ids)), timeout)


class Client:
    """The blocking client: an AsyncClient on a private event loop in a daemon
    thread; every method blocks until its answer. Safe to share between threads."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, path: str | None = None,
                 api_key: str | None = None, timeout: float | None = 60.0, connect_timeout: float = 10.0) -> None:
        self._async = AsyncClient(host, port, path=path, api_key=api_key, timeout=timeout,
                                  connect_timeout=connect_timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="radixserve-client", daemon=True)
        self._thread.start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def server(self) -> dict[str, Any] | None:
        return self._async.server

    def connect(self) -> None:
        self._run(self._async.connect())

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def __enter__(self) -> "Client":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(self, prompt: Any = None, **kw: Any) -> dict[str, Any]:
        return self._run(self._async.generate(prompt, **kw))  # type: ignore[no-any-return]

    def stream(self, prompt: Any = None, **kw: Any) -> Iterator[dict[str, Any]]:
        """Events as AsyncClient.stream; closing the iterator early cancels the request."""
        s = self._async.stream(prompt, **kw)
        try:
            while True:
                try:
                    yield self._run(s.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not s.finished:
                self._run(s.aclose())

    def cancel(self, request_id: Any) -> None:
        self._run(self._async.cancel(request_id))

    def tokenize(self, text: str, **kw: Any) -> list[int]:
        return self._run(self._async.tokenize(text, **kw))  # type: ignore[no-any-return]

    def detokenize(self, ids: Sequence[int] | np.ndarray, **kw: Any) -> str:
        return self._run(self._async.detokenize(ids, **kw))  # type: ignore[no-any-return]

    def get_system_prompt(self, **kw: Any) -> dict[str, Any]:
        return self._run(self._async.get_system_prompt(**kw))  # type: ignore[no-any-return]

    def set_system_prompt(self, content: str, **kw: Any) -> dict[str, Any]:
        return self._run(self._async.set_system_prompt(content, **kw))  # type: ignore[no-any-return]

    def stats(self, **kw: Any) -> dict[str, Any]:
        return self._run(self._async.stats(**kw))  # type: ignore[no-any-return]

    def ping(self, **kw: Any) -> None:
        self._run(self._async.ping(**kw))

