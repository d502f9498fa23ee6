"""A real radixserve server on a free loopback port, its event loop in a
background thread, so tests can drive it with blocking clients (the official
openai package) as well as with aiohttp."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from radixserve.server import ServerConfig, create_app
from radixserve.server.keys import STATE
from radixserve.server.state import ServerState


class ServerThread:
    def __init__(self, config: ServerConfig) -> None:
        self.app = create_app(config)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="test-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self) -> ServerState:
        return self.app[STATE]

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the test server did not start")
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        await self._start_fronts()
        self._stop = asyncio.Event()
        self._started.set()
        await self._stop.wait()
        await self._stop_fronts()
        await runner.cleanup()

    async def _start_fronts(self) -> None:
        """Other fronts on the same loop (a subclass adds the socket server)."""

    async def _stop_fronts(self) -> None:
        """Stop what _start_fronts started, before the HTTP runner."""

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state.ready:
                return
            if self.state.load_error:
                raise RuntimeError(self.state.load_error)
            time.sleep(0.02)
        raise RuntimeError("the model did not load")

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop (to read scheduler state safely)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def invariants_when_idle(self, timeout: float = 10) -> dict[str, Any]:
        """Wait until nothing runs or waits, check page conservation; the cache stats."""
        async def check() -> dict[str, Any] | None:
            sched = self.state.loaded.scheduler  # type: ignore[union-attr]
            if sched.running or sched.waiting or sched.forks:
                return None
            sched.check_invariants()
            sched.cache.check_invariants()
            return sched.stats()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.call(check())
            if stats is not None:
                return stats
            time.sleep(0.02)
        raise AssertionError("requests still running")

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, Any]:
        """A blocking request; the JSON answer (or text) and the status."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, payload = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode()
