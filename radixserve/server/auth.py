"""--api-key: every endpoint but /health needs `Authorization: Bearer KEY`,
compared in constant time; anything else is a 401 in OpenAI's shape."""
from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import ApiError

OPEN_PATHS = frozenset({"/health"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(api_key: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    want = api_key.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if not (scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), want)):
                raise ApiError(401, "missing or invalid API key: send 'Authorization: Bearer KEY'",
                               code="invalid_api_key")
        return await handler(request)

    return check
