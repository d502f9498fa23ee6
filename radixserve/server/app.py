"""The app factory: routes, middlewares, and the lifecycle (the model loads
and the scheduler starts in the app's cleanup context; both stop with it)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import cache_api, native, openai_api
from .auth import Handler, auth_middleware
from .config import ServerConfig
from .errors import ApiError, from_http_exception
from .keys import METRICS, STATE
from .metrics import Metrics
from .openapi import openapi
from .state import ServerState

log = logging.getLogger("radixserve.server")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal in OpenAI's error shape; an unexpected exception is a logged 500."""
    try:
        return await handler(request)
    except ApiError as e:
        return e.response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return from_http_exception(e).response()
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return ApiError(500, "internal server error", code="internal_error").response()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.load_task = asyncio.get_running_loop().create_task(state.load(), name="radixserve-load")
    state.load_task.add_done_callback(lambda t: t.cancelled() or t.exception())  # failure shows in /health
    yield
    state.stopping = True
    if not state.load_task.done():
        state.load_task.cancel()
    with contextlib.suppress(BaseException):
        await state.load_task
    await state.close()


def create_app(config: ServerConfig | None = None) -> web.Application:
    config = config or ServerConfig()
    middlewares = [error_middleware]
    if config.api_key:
        middlewares.append(auth_middleware(config.api_key))
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=middlewares)
    state = ServerState(config)
    app[STATE] = state
    app[METRICS] = Metrics(state)
    app.cleanup_ctx.append(_lifecycle)
    r = app.router
    r.add_post("/v1/completions", openai_api.completions)
    r.add_post("/v1/chat/completions", openai_api.chat_completions)
    r.add_get("/v1/models", native.models)
    r.add_get("/health", native.health)
    r.add_get("/metrics", native.metrics)
    r.add_post("/tokenize", native.tokenize)
    r.add_post("/detokenize", native.detokenize)
    r.add_get("/v1/system_prompt", native.get_system_prompt)
    r.add_put("/v1/system_prompt", native.put_system_prompt)
    r.add_get("/v1/cache", native.cache)
    r.add_post("/v1/cache/save", cache_api.save)
    r.add_get("/openapi.json", openapi)
    return app
