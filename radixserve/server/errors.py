"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure a client can cause is an ApiError raised by a parser or a
handler; the app's error middleware turns it (and aiohttp's own HTTP errors:
unknown route, body too large) into this JSON with the right status, so bad
input never becomes a 500.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error", 503: "service_unavailable"}


class ApiError(Exception):
    """A request the server refuses: the status, a message naming the problem, the bad field."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return web.json_response(self.body(), status=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_http_exception(e: web.HTTPException) -> ApiError:
    """aiohttp's own refusals (404 route, 405 method, 413 body) in OpenAI's shape."""
    if e.status == 404:
        return ApiError(404, "unknown route", code="not_found")
    if e.status == 405:
        return ApiError(405, f"method not allowed: {e.reason}", code="method_not_allowed")
    if e.status == 413:
        return ApiError(413, e.text or "request body too large", code="request_too_large")
    return ApiError(e.status, e.reason or e.text or "error")
