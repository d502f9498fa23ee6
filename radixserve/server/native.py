"""Native endpoints, shaped as llama-server's where it has them: /health,
/tokenize, /detokenize, /metrics, the system prompt, the cache, /v1/models."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from ..chat_template import ChatTemplateError
from .errors import bad_request
from .fields import read_json
from .keys import METRICS, STATE
from .metrics import CONTENT_TYPE


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.stopping:
        return web.json_response({"status": "shutting down"}, status=503)
    if not state.ready:
        if state.load_error:
            return web.json_response({"status": "error", "error": state.load_error}, status=503)
        return web.json_response({"status": "loading model"}, status=503)
    return web.json_response({"status": "ok"})


async def models(request: web.Request) -> web.Response:
    loaded = request.app[STATE].require()
    return web.json_response({"object": "list", "data": [{
        "id": loaded.model_name, "object": "model", "created": loaded.created, "owned_by": "radixserve",
        "meta": {"n_ctx": loaded.scheduler.n_ctx, "n_vocab": loaded.model.n_vocab, "path": str(loaded.model.path)},
    }]})


async def tokenize(request: web.Request) -> web.Response:
    loaded = request.app[STATE].require()
    body = await read_json(request)
    content = body.str("content", None)
    if content is None:
        raise bad_request("content is required (a string)", param="content")
    add_special = body.bool("add_special", False)
    parse_special = body.bool("parse_special", True)
    ids = loaded.tokenizer.encode(content, add_special=add_special, parse_special=parse_special)
    return web.json_response({"tokens": ids})


async def detokenize(request: web.Request) -> web.Response:
    loaded = request.app[STATE].require()
    body = await read_json(request)
    tokens = body.raw("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise bad_request("tokens must be an array of token ids", param="tokens")
    n_vocab = loaded.tokenizer.n_vocab
    bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise bad_request(f"token id {bad} is outside the vocabulary [0, {n_vocab})", param="tokens")
    return web.json_response({"content": loaded.tokenizer.decode(tokens, special=True)})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def _system_body(request: web.Request) -> dict[str, Any]:
    state = request.app[STATE]
    prefix = state.system_prefix
    return {"content": state.system_text, "tokens": len(prefix.ids) if prefix else 0,
            "pinned_tokens": len(state.loaded.scheduler.system_prompt or []) if state.loaded else 0}


async def get_system_prompt(request: web.Request) -> web.Response:
    request.app[STATE].require()
    return web.json_response(_system_body(request))


async def put_system_prompt(request: web.Request) -> web.Response:
    """Answers once the new root is prefilled and pinned."""
    state = request.app[STATE]
    state.require()
    body = await read_json(request)
    content = body.str("content", None)
    if not content:
        raise bad_request("content must be a non-empty string", param="content")
    try:
        await state.set_system_prompt(content)
    except ChatTemplateError as e:
        raise bad_request(str(e), param="content") from None
    except ValueError as e:  # the scheduler refused the prefix (longer than the context or the pool)
        raise bad_request(f"system prompt: {e}", param="content") from None
    return web.json_response(_system_body(request))


async def cache(request: web.Request) -> web.Response:
    loaded = request.app[STATE].require()
    sched = loaded.scheduler
    s = sched.stats()
    tree = [{"id": n.uid, "parent": n.parent_uid, "namespace": n.namespace, "tokens": n.n_tokens,
             "depth_tokens": n.depth_tokens, "pages": n.n_pages, "lock_count": n.lock_ref, "pinned": n.pin_ref > 0,
             "last_access": n.last_access} for n in sched.cache.dump_tree()]
    return web.json_response({
        "page_size": sched.page_size, "pages_total": s["total_pages"], "pages_free": s["free_pages"],
        "pages_in_tree": s["in_tree_pages"], "pages_private": s["held_pages"], "pages_locked": s["locked_pages"],
        "pages_pinned": s["pinned_pages"], "pages_evictable": s["evictable_pages"],
        "query_tokens": s["query_tokens"], "hit_tokens": s["hit_tokens"], "hit_rate": s["hit_rate"],
        "evicted_pages": s["evicted_pages"], "running": s["running"], "waiting": s["waiting"],
        "nodes": s["nodes"], "counters": s["counters"], "tree": tree,
    })
