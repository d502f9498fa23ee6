"""The socket front: asyncio servers on loopback TCP and/or a Unix socket,
inside the `radixserve serve` process, sharing its ServerState (scheduler,
tokenizer, system prompt) with the HTTP front."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from ..server.state import ServerState
from .connection import Connection

log = logging.getLogger("radixserve.wire")


class WireServer:
    """Listeners and their connections. start_* may be called several times; close() stops all."""

    def __init__(self, state: ServerState, max_frame_bytes: int | None = None) -> None:
        self.state = state
        self.max_frame_bytes = max_frame_bytes or state.config.max_body_bytes
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: set[Connection] = set()
        self.addresses: list[str] = []

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0: a free port); returns the port."""
        server = await asyncio.start_server(self._on_client, host, port)
        self.servers.append(server)
        bound = server.sockets[0].getsockname()[1]
        self.addresses.append(f"tcp://{host}:{bound}")
        return bound

    async def start_unix(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if not os.path.isfile(path):  # a stale socket of an earlier run; never a regular file
                os.unlink(path)
        server = await asyncio.start_unix_server(self._on_client, path)
        self.servers.append(server)
        self.addresses.append(f"unix://{path}")

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self.state, reader, writer, self.max_frame_bytes)
        self.connections.add(conn)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop listening; give requests in flight `grace_s` to finish, then cancel them and close every connection."""
        for s in self.servers:
            s.close()
        conns = list(self.connections)
        if grace_s > 0 and conns:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(c.wait_idle() for c in conns)), grace_s)
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        for s in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 1.0)
        for a in self.addresses:
            if a.startswith("unix://"):
                with contextlib.suppress(OSError):
                    os.unlink(a[len("unix://"):])
        self.servers.clear()
