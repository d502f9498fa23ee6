"""ServerThread (server_util.py) plus the socket front on a free loopback
port (and optionally a Unix socket), both on the server's one event loop,
as `radixserve serve --socket-port/--unix-socket` runs them."""
from __future__ import annotations

import socket
import struct


from radixserve.server import ServerConfig
from radixserve.wire.server import WireServer
from server_util import ServerThread


class WireServerThread(ServerThread):
    def __init__(self, config: ServerConfig, unix_path: str | None = None) -> None:
        super().__init__(config)
        self.unix_path = unix_path
        self.socket_port = 0
        self.wire: WireServer | None = None

    async def _start_fronts(self) -> None:
        self.wire = WireServer(self.state)
        self.socket_port = await self.wire.start_tcp("127.0.0.1", 0)
        if self.unix_path:
            await self.wire.start_unix(self.unix_path)

    async def _stop_fronts(self) -> None:
        assert self.wire is not None
        await self.wire.close()


class RawConn:
    """A blocking socket speaking raw frames, for bad-input tests."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, body: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def send(self, obj: dict) -> None:
        import msgpack
        self.send_frame(msgpack.packb(obj, use_bin_type=True))

    def recv(self) -> dict:
        import msgpack
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return msgpack.unpackb(body, raw=False, strict_map_key=False)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def close(self) -> None:
        self.sock.close()
