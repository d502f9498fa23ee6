"""GET /openapi.json: the API this server implements, as OpenAPI 3.1.

Kept next to the routes it describes; tests check that every documented
path is routed and every route is documented."""
from __future__ import annotations

from typing import Any

from aiohttp import web


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {str(s): _json(_ref("Error"), d) for s, d in (
    (400, "malformed JSON, a wrong field type or value (param names the field)"),
    (401, "missing or wrong API key (with --api-key)"),
    (404, "unknown route, or model_not_found"),
    (413, "request body too large"),
    (429, "queue full"),
    (503, "loading or shutting down"))}

_SAMPLING = {
    "model": {"type": "string", "description": "omitted, 'default' or the served model id"},
    "max_tokens": {"type": "integer", "minimum": 0}, "max_completion_tokens": {"type": "integer", "minimum": 0},
    "temperature": {"type": "number", "minimum": 0, "maximum": 100}, "top_p": {"type": "number"},
    "top_k": {"type": "integer", "minimum": 0}, "min_p": {"type": "number"},
    "presence_penalty": {"type": "number"}, "frequency_penalty": {"type": "number"},
    "repetition_penalty": {"type": "number"},
    "logit_bias": {"type": "object", "additionalProperties": {"type": "number"}},
    "seed": {"type": "integer"}, "n": {"type": "integer", "minimum": 1},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 16}]},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "ignore_eos": {"type": "boolean"}, "cache_prompt": {"type": "boolean", "default": True},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]},
        "code": {"type": ["string", "null"]}}}}},
    "Usage": {"type": "object", "properties": {
        "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": {"type": "object", "properties": {"cached_tokens": {"type": "integer"}}}}},
    "CompletionRequest": {"type": "object", "required": ["prompt"], "properties": {
        "prompt": {"oneOf": [
            {"type": "string"}, {"type": "array", "items": {"type": "integer"}},
            {"type": "array", "minItems": 1, "maxItems": 32,
             "description": "a batch: choice i * n + j is prompt i's sample j",
             "items": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]}}]},
        "echo": {"type": "boolean", "default": False, "description": "each choice's text opens with its prompt"},
        "logprobs": {"type": "integer", "minimum": 0, "maximum": 20}, **_SAMPLING}},
    "ChatRequest": {"type": "object", "required": ["messages"], "properties": {
        "messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"enum": ["system", "user", "assistant"]}, "content": {"type": "string"}}}},
        "logprobs": {"type": "boolean"}, "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        **_SAMPLING}},
    "Completion": {"type": "object", "properties": {
        "id": {"type": "string"}, "object": {"const": "text_completion"}, "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object", "properties": {
            "index": {"type": "integer"}, "text": {"type": "string"},
            "finish_reason": {"enum": ["stop", "length", None]}}}}, "usage": _ref("Usage")}},
    "ChatCompletion": {"type": "object", "properties": {
        "id": {"type": "string"}, "object": {"const": "chat.completion"}, "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object", "properties": {
            "index": {"type": "integer"}, "message": {"type": "object"},
            "finish_reason": {"enum": ["stop", "length", None]}}}}, "usage": _ref("Usage")}},
    "SystemPrompt": {"type": "object", "properties": {
        "content": {"type": ["string", "null"]}, "tokens": {"type": "integer"}, "pinned_tokens": {"type": "integer"}}},
}

_CACHE_FIELDS = ("page_size", "pages_total", "pages_free", "pages_in_tree", "pages_private", "pages_locked",
                 "pages_pinned", "pages_evictable", "query_tokens", "hit_tokens", "evicted_pages", "running",
                 "waiting")
_SCHEMAS["Cache"] = {"type": "object", "properties": {
    **{f: {"type": "integer"} for f in _CACHE_FIELDS},
    "tree": {"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "integer"}, "parent": {"type": ["integer", "null"]}, "tokens": {"type": "integer"},
        "pages": {"type": "integer"}, "lock_count": {"type": "integer"}, "pinned": {"type": "boolean"},
        "last_access": {"type": "integer"}}}}}}

_SSE = {"text/event-stream": {"schema": {"type": "string",
                                        "description": "data: {chunk}\\n\\n ... data: [DONE]\\n\\n"}}}


def _op(summary: str, ok: dict[str, Any], body: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_ERRORS}}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _gen(summary: str, req: str, resp: str) -> dict[str, Any]:
    op = _op(summary, _json(_ref(resp)), req)
    op["responses"]["200"]["content"].update(_SSE)
    return op


def document() -> dict[str, Any]:
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "radixserve", "version": "0.1.0",
                 "description": "CPU LLM serving with a radix-tree prefix cache; OpenAI-compatible."},
        "components": {"schemas": _SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/completions": {"post": _gen("text completion", "CompletionRequest", "Completion")},
            "/v1/chat/completions": {"post": _gen("chat completion", "ChatRequest", "ChatCompletion")},
            "/v1/models": {"get": _op("the served model", _json(obj))},
            "/health": {"get": _op("200 when ready, 503 while loading", _json(obj))},
            "/metrics": {"get": _op("Prometheus text", {"description": "OK",
                                                        "content": {"text/plain": {"schema": {"type": "string"}}}})},
            "/tokenize": {"post": _op("text to token ids", _json(obj))},
            "/detokenize": {"post": _op("token ids to text", _json(obj))},
            "/v1/system_prompt": {"get": _op("the default system prompt", _json(_ref("SystemPrompt"))),
                                  "put": _op("replace it; answers once pinned", _json(_ref("SystemPrompt")),
                                             "SystemPrompt")},
            "/v1/cache": {"get": _op("prefix cache statistics and tree", _json(_ref("Cache")))},
            "/v1/cache/save": {"post": _op("write the prefix cache to --cache-file now", _json(obj))},
            "/openapi.json": {"get": _op("this document", _json(obj))},
        },
    }


async def openapi(_: web.Request) -> web.Response:
    return web.json_response(document())
