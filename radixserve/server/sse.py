"""Server-sent events as OpenAI streams them: `data: {json}\\n\\n` per chunk,
then `data: [DONE]\\n\\n`. A write to a client that went away raises
ClientGone, which the handler turns into a cancelled request."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class ClientGone(Exception):
    """The client closed the connection mid-stream."""


class SSEWriter:
    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })
        self.started = False

    async def start(self) -> None:
        if not self.started:
            await self.response.prepare(self.request)
            self.started = True

    async def send(self, obj: Any) -> None:
        await self._write(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")

    async def done(self) -> None:
        await self._write(b"data: [DONE]\n\n")
        try:
            await self.response.write_eof()
        except (ConnectionError, RuntimeError):
            pass

    async def _write(self, data: bytes) -> None:
        await self.start()
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ClientGone()
        try:
            await self.response.write(data)
        except (ConnectionError, RuntimeError) as e:
            raise ClientGone() from e
