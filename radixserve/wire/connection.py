"""One client connection: frames in, messages dispatched, answers out.

Requests are handled in arrival order; a generate (and a system prompt
change, which prefills) goes on in its own task, so any number run at once
on one connection, each answered by its id. Only the reading loop ends a
connection: at end of stream (or a reset) every request still in flight is
cancelled, so their pages go back at the next scheduler step.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from scheduler.request import RequestError, RequestHandle

from ..chat_template import ChatTemplateError
from ..server.errors import ApiError
from ..server.runner import GenerationError
from ..server.state import Loaded, ServerState
from . import codec, messages as m
from .errors import Code, WireError
from .framing import FrameDecoder, Oversized
from .generate import WireRun, check_vocab, from_api_error, parse, request_error_field

log = logging.getLogger("radixserve.wire")

READ_CHUNK = 1 << 16


class Connection:
    def __init__(self, state: ServerState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_frame_bytes: int) -> None:
        self.state = state
        self.reader = reader
        self.writer = writer
        self.max_frame_bytes = max_frame_bytes
        self.authed = state.config.api_key is None
        self.handles: dict[int | str, RequestHandle | None] = {}   # in flight; None: a system prompt change
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    # ------------------------------------------------------------------ I/O

    async def serve(self) -> None:
        decoder = FrameDecoder(self.max_frame_bytes)
        try:
            while True:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    break
                for frame in decoder.feed(data):
                    self._on_frame(frame)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            await self.close()

    def send(self, msg: m.Message) -> None:
        if not self.closed:
            self.writer.write(codec.encode(msg))

    def send_error(self, e: WireError) -> None:
        self.send(m.Error(id=e.id, code=e.code.value, message=e.message, field=e.field))

    async def close(self) -> None:
        """Cancel everything in flight and close the socket (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for h in self.handles.values():
            if h is not None:
                h.cancel()
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def wait_idle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    # ------------------------------------------------------------------ dispatch

    def _on_frame(self, frame: bytes | Oversized) -> None:
        if isinstance(frame, Oversized):
            self.send_error(WireError(Code.FRAME_TOO_LARGE, f"a frame of {frame.length} bytes exceeds this "
                                      f"server's limit of {self.max_frame_bytes}; it was skipped"))
            return
        msg: m.Message | None = None
        try:
            msg = codec.decode(frame)
            self._dispatch(msg)
        except WireError as e:
            self.send_error(e.with_id(getattr(msg, "id", None)))
        except ApiError as e:
            self.send_error(from_api_error(e).with_id(getattr(msg, "id", None)))
        except Exception:
            log.exception("unhandled error on a %s message", type(msg).__name__)
            self.send_error(WireError(Code.INTERNAL_ERROR, "internal server error", id=getattr(msg, "id", None)))

    def _dispatch(self, msg: m.Message) -> None:
        if isinstance(msg, m.Hello):
            return self._hello(msg)
        if not self.authed:
            raise WireError(Code.UNAUTHORIZED, "this server needs an API key: send hello with api_key first")
        if isinstance(msg, m.Ping):
            return self.send(m.Pong(id=msg.id))
        if isinstance(msg, m.Cancel):
            h = self.handles.get(msg.id)
            if h is not None:
                h.cancel()
            return None
        loaded = self.state.require()
        if isinstance(msg, m.Generate):
            return self._generate(msg, loaded)
        if isinstance(msg, m.Tokenize):
            ids = loaded.tokenizer.encode(msg.text, add_special=bool(msg.add_special),
                                          parse_special=msg.parse_special is not False)
            return self.send(m.TokenIds(id=msg.id, ids=ids))
        if isinstance(msg, m.Detokenize):
            check_vocab(msg.ids, loaded.tokenizer.n_vocab, "ids")
            return self.send(m.Text(id=msg.id, text=loaded.tokenizer.decode(msg.ids, special=True)))
        if isinstance(msg, m.GetSystemPrompt):
            return self.send(self._system_prompt(msg.id))
        if isinstance(msg, m.SetSystemPrompt):
            return self._set_system_prompt(msg)
        if isinstance(msg, m.Stats):
            return self.send(m.StatsReply(id=msg.id, stats=_stats(loaded)))
        raise WireError(Code.UNKNOWN_TYPE, f"{msg.TYPE} is not a request", field="type")

    def _hello(self, msg: m.Hello) -> None:
        if msg.version != m.PROTOCOL_VERSION:
            raise WireError(Code.UNSUPPORTED_VERSION, f"this server speaks protocol version {m.PROTOCOL_VERSION}, "
                            f"not {msg.version}", field="version")
        key = self.state.config.api_key
        if key is not None:
            if msg.api_key is None or not hmac.compare_digest(msg.api_key.encode(), key.encode()):
                raise WireError(Code.UNAUTHORIZED, "a wrong or missing API key", field="api_key")
            self.authed = True
        loaded = self.state.require()
        self.send(m.HelloReply(id=msg.id, version=m.PROTOCOL_VERSION, server="radixserve", model=loaded.model_name,
                               n_vocab=loaded.tokenizer.n_vocab, n_ctx=loaded.scheduler.n_ctx,
                               max_frame_bytes=self.max_frame_bytes))

    def _claim(self, rid: int | str) -> None:
        if rid in self.handles:
            raise WireError(Code.DUPLICATE_ID, f"request id {rid!r} is already in flight on this connection",
                            field="id")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------------ generate

    def _generate(self, msg: m.Generate, loaded: Loaded) -> None:
        self._claim(msg.id)
        job = parse(msg, loaded, self.state.system_text)
        sched = loaded.scheduler
        if len(sched.waiting) >= self.state.config.max_waiting:
            raise WireError(Code.QUEUE_FULL, f"the queue is full ({len(sched.waiting)} requests waiting); retry later")
        try:
            handle = sched.submit(job.request)
        except RequestError as e:
            raise WireError(Code.INVALID_VALUE, str(e), field=request_error_field(str(e))) from None
        self.handles[msg.id] = handle
        run = WireRun(job, handle, loaded, msg.id, bool(msg.ids_only))
        self._spawn(self._stream(run, handle), f"wire-generate-{msg.id}")

    async def _stream(self, run: WireRun, handle: RequestHandle) -> None:
        try:
            async for ev in handle:
                out = run.on_event(ev)
                if out is not None:
                    self.send(out)
                if run.finished:
                    break
                await self.writer.drain()
            self.send(run.done())
        except GenerationError as e:
            self.send_error(WireError(Code.ENGINE_ERROR, str(e), id=run.rid))
        except (ConnectionError, OSError):
            pass
        finally:
            handle.cancel()  # no-op once every sample finished; else (stop strings, a drop) frees its pages
            self.handles.pop(run.rid, None)

    # ------------------------------------------------------------------ system prompt

    def _system_prompt(self, rid: int | str) -> m.SystemPrompt:
        state = self.state
        prefix = state.system_prefix
        pinned = state.loaded.scheduler.system_prompt if state.loaded else None
        return m.SystemPrompt(id=rid, content=state.system_text, tokens=len(prefix.ids) if prefix else 0,
                              pinned_tokens=len(pinned or []))

    def _set_system_prompt(self, msg: m.SetSystemPrompt) -> None:
        self._claim(msg.id)
        if not msg.content:
            raise WireError(Code.INVALID_VALUE, "content must be a non-empty string", field="content")
        self.handles[msg.id] = None
        self._spawn(self._change_system_prompt(msg), f"wire-system-{msg.id}")

    async def _change_system_prompt(self, msg: m.SetSystemPrompt) -> None:
        try:
            await self.state.set_system_prompt(msg.content)
            self.send(self._system_prompt(msg.id))
        except (ChatTemplateError, ValueError) as e:  # the template or the scheduler refused it
            self.send_error(WireError(Code.INVALID_VALUE, f"system prompt: {e}", field="content", id=msg.id))
        except ApiError as e:
            self.send_error(from_api_error(e).with_id(msg.id))
        finally:
            self.handles.pop(msg.id, None)


def _stats(loaded: Loaded) -> dict[str, Any]:
    """The HTTP API's /v1/cache figures, less the tree."""
    sched = loaded.scheduler
    s = sched.stats()
    return {"page_size": sched.page_size, "pages_total": s["total_pages"], "pages_free": s["free_pages"],
            "pages_in_tree": s["in_tree_pages"], "pages_private": s["held_pages"], "pages_locked": s["locked_pages"],
            "pages_pinned": s["pinned_pages"], "pages_evictable": s["evictable_pages"],
            "query_tokens": s["query_tokens"], "hit_tokens": s["hit_tokens"], "hit_rate": s["hit_rate"],
            "evicted_pages": s["evicted_pages"], "running": s["running"], "waiting": s["waiting"],
            "nodes": s["nodes"], "counters": s["counters"]}
