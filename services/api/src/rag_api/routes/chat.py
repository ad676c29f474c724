"""`POST /v1/chat/completions`: OpenAI-compatible, cached per school on a canonical request key; `stream: true`
answers Server-Sent Events from the same entry (rag_api.streaming)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from rag_api.deps import CacheMode, CacheModeDep, Services, ServicesDep, TenantDep
from rag_api.metrics import CACHE_RESULTS
from rag_api.routes.headers import BYPASS_HEADERS, UPSTREAM_FAILURES, cache_headers
from rag_api.streaming import stream_chat

__all__ = ["ChatRequest", "chat_key", "router"]

router = APIRouter(tags=["openai"])

# Fields that never change the answer, so requests differing only in them share one cache entry.
_NOT_IN_KEY = {"stream", "stream_options", "user", "metadata", "store", "service_tier", "safety_identifier"}


class ChatMessage(BaseModel):
    """One message; extra fields (tool_calls, name, tool_call_id, ...) are kept and forwarded."""

    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, max_length=64)
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The OpenAI chat completions request; unnamed fields are forwarded and take part in the cache key."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    n: int | None = Field(default=None, ge=1, le=128)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    stream: bool | None = None
    user: str | None = Field(default=None, max_length=256)


def _validate(body: ChatRequest, services: Services) -> dict[str, Any]:
    settings = services.settings
    if len(body.messages) > settings.max_batch_size:
        raise HTTPException(400, detail=f"at most {settings.max_batch_size} messages per request (MAX_BATCH_SIZE)")
    for i, message in enumerate(body.messages):
        if isinstance(message.content, str) and len(message.content) > settings.max_input_chars:
            raise HTTPException(
                400, detail=f"messages[{i}].content is longer than {settings.max_input_chars} (MAX_INPUT_CHARS)"
            )
    return body.model_dump(exclude_none=True, exclude={"stream", "stream_options"})


def chat_key(request: dict[str, Any]) -> str:
    """A digest of every field that can change the answer, independent of key order and of null fields."""
    canonical = {k: v for k, v in request.items() if k not in _NOT_IN_KEY}
    try:
        # The standard library, strict: NaN/Infinity and lone surrogates are refused, as the upstream would.
        blob = json.dumps(canonical, sort_keys=True, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        data = blob.encode("utf-8")
    except (ValueError, TypeError) as exc:
        raise HTTPException(400, detail=f"request cannot be encoded as JSON: {exc}") from exc
    return f"chat:{hashlib.sha256(data).hexdigest()}"


@router.post("/v1/chat/completions")
async def create_chat_completion(
    body: ChatRequest, school_id: TenantDep, services: ServicesDep, mode: CacheModeDep
) -> Response:
    """Answer from the cache, or ask the upstream once for every identical concurrent request."""
    request = _validate(body, services)
    key = chat_key(request)
    cache, upstream = services.llm, services.upstream
    ttl = services.settings.llm_cache_ttl
    if body.stream:  # Server-Sent Events, from the same cache entry (see rag_api.streaming)
        options = body.model_extra.get("stream_options") if body.model_extra else None
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        normal = mode is CacheMode.NORMAL
        return await stream_chat(
            request, key, school_id=school_id, cache=cache, upstream=upstream, ttl=ttl,
            include_usage=include_usage, use_cache=normal, store=mode is CacheMode.NO_CACHE or normal,
        )  # fmt: skip

    prices = services.prices
    if mode is not CacheMode.NORMAL:
        answer = await upstream.chat(request)
        prices.count(body.model, "upstream", _usage(answer))
        if mode is CacheMode.NO_CACHE:
            await cache.set(key, answer, ttl=ttl, school_id=school_id)
        headers = dict(BYPASS_HEADERS)
    else:

        async def compute() -> dict[str, Any]:
            computed = await upstream.chat(request)
            prices.count(body.model, "upstream", _usage(computed))
            return computed

        found = await cache.resolve(key, compute, ttl=ttl, school_id=school_id, failures=UPSTREAM_FAILURES)
        answer = found.value
        if found.hit:
            prices.count(body.model, "cache", _usage(answer))
        headers = cache_headers([found])
        del headers["X-Cache-Hits"]
    CACHE_RESULTS.labels("chat", headers["X-Cache"]).inc()
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)


def _usage(answer: dict[str, Any]) -> int:
    usage = answer.get("usage")
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else 0
