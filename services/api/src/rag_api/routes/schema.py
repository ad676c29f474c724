"""What the OpenAPI schema declares beyond FastAPI's defaults: the request body of a `DirectRoute`, and every
error answer a route can give, in the shape `rag_api.errors` gives it (checked by the schemathesis test)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["OpenAIErrorBody", "detail_responses", "openai_route"]


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error envelope, the body of every error on `/v1/*`."""

    error: OpenAIError


class DetailBody(BaseModel):
    """The body of every error outside `/v1/*` (and of those nginx answers itself)."""

    detail: Any


_WHY = {
    400: "invalid request (a limit, a cache directive, a scope)",
    401: "missing or unknown API key",
    403: "the key may not do this",
    413: "body larger than MAX_REQUEST_BYTES",
    422: "the body does not match the schema",
    429: "the model's rate limit (with Retry-After)",
    502: "the model failed or could not be reached",
    503: "the cache is unavailable and CACHE_FALLBACK_ENABLED=false",
    504: "no answer within the request's time budget",
}
_DATA_ERRORS = (400, 401, 403, 413, 422, 429, 502, 503, 504)
# The request header of per-request cache control (rag_api.caching); the body's `cache` object is in the body.
_CACHE_CONTROL = {
    "name": "Cache-Control",
    "in": "header",
    "required": False,
    "description": "no-cache (skip the read), no-store (skip read and write), max-age=N (this entry's TTL, "
    "bounded by the cache's); anything else is a 400",
    "schema": {"type": "string", "pattern": "^(no-cache|no-store|max-age=[0-9]{1,9})(, ?(no-cache|no-store))*$"},
}


def _responses(model: type[BaseModel], statuses: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model, "description": _WHY[status]} for status in statuses}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with every `$ref` to its `$defs` replaced by the definition (our bodies are not recursive)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def openai_route(body: type[BaseModel], *, streams: bool = False) -> dict[str, Any]:
    """The `router.post` arguments of a cached `/v1/*` DirectRoute taking `body` (JSON answers, and with
    `streams` Server-Sent Events for `stream: true`)."""
    schema = body.model_json_schema(by_alias=True)
    schema = _inline(schema, schema.pop("$defs", {}))
    extra = {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "parameters": [_CACHE_CONTROL],
    }
    responses: dict[int | str, dict[str, Any]] = _responses(OpenAIErrorBody, _DATA_ERRORS)
    if streams:
        content: dict[str, Any] = {"application/json": {}, "text/event-stream": {}}
        responses[200] = {
            "description": "the answer, or its SSE stream of chat.completion.chunk events",
            "content": content,
        }
    return {"openapi_extra": extra, "responses": responses}


def detail_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route outside `/v1/*`: `{"detail": ...}` for each status."""
    return _responses(DetailBody, statuses)
