"""`radixserve serve`: run the app on uvloop until SIGINT/SIGTERM.

Stopping: the listening sockets close at once, new requests on open
connections get 503, requests in flight get `shutdown_grace_s` to finish and
are then cancelled (their pages released), the scheduler stops; exit 0.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from ..wire.server import WireServer
from .app import create_app
from .config import ServerConfig
from .keys import STATE
from .state import ServerState

log = logging.getLogger("radixserve.server")

EXIT_LOAD_FAILED = 2


async def run_server(config: ServerConfig, host: str, port: int) -> int:
    app = create_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=config.shutdown_grace_s)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    for addr in runner.addresses:
        log.info("listening on http://%s:%s", addr[0], addr[1])
    wire = await _start_wire(config, app[STATE])
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    state = app[STATE]
    assert state.load_task is not None
    stopper = loop.create_task(stop.wait())
    await asyncio.wait([stopper, state.load_task], return_when=asyncio.FIRST_COMPLETED)
    rc = 0
    if state.load_error is not None:
        rc = EXIT_LOAD_FAILED
    elif not stop.is_set():
        await stopper  # loaded: serve until a signal
    stopper.cancel()
    log.info("stopping: %d running, %d waiting; grace %.0f s", *_queue(state), config.shutdown_grace_s)
    state.stopping = True
    if wire is not None:
        await wire.close(config.shutdown_grace_s)
    await runner.cleanup()
    log.info("stopped")
    return rc


async def _start_wire(config: ServerConfig, state: ServerState) -> WireServer | None:
    """The msgpack socket front (--socket-port, --unix-socket), sharing the app's state."""
    if config.socket_port is None and config.unix_socket is None:
        return None
    wire = WireServer(state)
    if config.socket_port is not None:
        await wire.start_tcp(config.socket_host, config.socket_port)
    if config.unix_socket is not None:
        await wire.start_unix(config.unix_socket)
    for addr in wire.addresses:
        log.info("listening on %s (msgpack protocol)", addr)
    return wire


def _queue(state) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    if state.loaded is None:
        return 0, 0
    return len(state.loaded.scheduler.running), len(state.loaded.scheduler.waiting)


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> int:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:  # uvloop is a dependency, but the server runs without it
        return asyncio.run(run_server(config, host, port))
    return uvloop.run(run_server(config, host, port))
