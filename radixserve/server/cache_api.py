"""POST /v1/cache/save: write the prefix cache to the server's --cache-file now.

Only the configured path is ever written (a client cannot name a file). The
answer comes once the snapshot is durable; requests keep being served meanwhile.
"""
from __future__ import annotations

from aiohttp import web

from .errors import ApiError
from .keys import STATE


async def save(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.require()
    if not state.config.cache_file:
        raise ApiError(400, "no cache file is configured (start the server with --cache-file PATH)",
                       code="no_cache_file")
    try:
        report = await state.save_cache()
    except OSError as e:
        raise ApiError(500, f"could not save the prefix cache: {e}", code="cache_save_failed") from None
    return web.json_response({"path": report.path, "bytes": report.bytes, "nodes": report.nodes,
                              "pages": report.pages, "tokens": report.tokens,
                              "seconds": round(report.seconds, 4)})
