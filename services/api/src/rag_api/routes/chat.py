"""`POST /v1/chat/completions`: OpenAI-compatible, cached per school on a canonical request key; `stream: true`
answers Server-Sent Events from the same entry (rag_api.streaming)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from rag_api import request_keys
from rag_api.caching import CacheField, CacheMode, request_policy, serve
from rag_api.deps import DirectRoute, Services, json_body, tenant_of
from rag_api.monitoring import Costing
from rag_api.routes.schema import openai_route
from rag_api.streaming import stream_chat

__all__ = ["ChatRequest", "cache_keys", "chat_key", "router"]

router = APIRouter(tags=["openai"], route_class=DirectRoute)

# Fields that never change the answer, so requests differing only in them share one cache entry.
# (`cache`, the request's cache policy, is neither forwarded to the model nor part of the key.)
_NOT_IN_KEY = {"stream", "stream_options", "user", "metadata", "store", "service_tier", "safety_identifier"}
# OpenAI refuses these roles without `content` (an assistant message may carry tool_calls instead).
_CONTENT_REQUIRED = {"user", "system", "developer", "tool"}


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
    cache: CacheField = None


def _validate(body: ChatRequest, services: Services) -> dict[str, Any]:
    """The request to forward (without `stream`, `stream_options` and `cache`), after OpenAI's checks and our
    limits."""
    settings = services.settings
    if len(body.messages) > settings.max_batch_size:
        raise HTTPException(400, detail=f"at most {settings.max_batch_size} messages per request (MAX_BATCH_SIZE)")
    for i, message in enumerate(body.messages):
        if message.content is None and message.role in _CONTENT_REQUIRED:
            raise HTTPException(400, detail=f"missing required parameter: messages[{i}].content (role {message.role})")
        for where, text in _texts(message.content, f"messages[{i}].content"):
            if len(text) > settings.max_input_chars:
                raise HTTPException(400, detail=f"{where} is longer than {settings.max_input_chars} (MAX_INPUT_CHARS)")
    return body.model_dump(exclude_none=True, exclude={"stream", "stream_options", "cache"})


def _texts(content: str | list[dict[str, Any]] | None, where: str) -> list[tuple[str, str]]:
    """Every text of a message's content: the string, or each part's `text` (which must be a string)."""
    if isinstance(content, str):
        return [(where, content)]
    texts = []
    for j, part in enumerate(content or ()):
        if "text" in part:
            if not isinstance(part["text"], str):
                raise HTTPException(400, detail=f"{where}[{j}].text must be a string")
            texts.append((f"{where}[{j}].text", part["text"]))
    return texts


def _sampled(request: dict[str, Any]) -> bool:
    """Whether the model samples its answer: temperature > 0 or top_p < 1 (OpenAI's defaults are 1), no seed."""
    return "seed" not in request and (request.get("temperature", 1.0) > 0 or request.get("top_p", 1.0) < 1)


def chat_key(request: dict[str, Any]) -> str:
    """The route key of a request: every member that can change the answer, independent of order and nulls."""
    try:
        return request_keys.chat_key({k: v for k, v in request.items() if k not in _NOT_IN_KEY})
    except request_keys.KeyEncodingError as exc:
        raise HTTPException(400, detail=f"request cannot be encoded as JSON: {exc}") from exc


def cache_keys(body: ChatRequest, services: Services) -> tuple[dict[str, Any], list[str]]:
    """The request to forward (validated) and its route key."""
    request = _validate(body, services)
    return request, [chat_key(request)]


@router.post("/v1/chat/completions", **openai_route(ChatRequest, streams=True))
async def create_chat_completion(request: Request) -> Response:
    """Answer from the cache, or ask the upstream once for every identical concurrent request."""
    school_id = tenant_of(request)
    body = await json_body(request, ChatRequest)
    services: Services = request.app.state.services
    forwarded, keys = cache_keys(body, services)
    settings = services.settings
    policy = request_policy(
        request.headers.get("cache-control"),
        body.cache,
        max_ttl=settings.llm_cache_ttl,
        bypass=not settings.cache_sampled_completions and _sampled(forwarded),
    )
    if body.stream:  # Server-Sent Events from the same cache entry (rag_api.streaming), under the same policy
        options = body.model_extra.get("stream_options") if body.model_extra else None
        return await stream_chat(
            forwarded,
            policy.key(keys[0]),
            school_id=school_id,
            cache=services.llm,
            upstream=services.upstream,
            ttl=policy.ttl,
            include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
            use_cache=policy.mode is CacheMode.NORMAL,
            store=policy.mode is not CacheMode.NO_STORE,
        )

    async def compute(_: list[str]) -> list[dict[str, Any]]:
        return [await services.upstream.chat(forwarded)]

    costing = Costing(services.prices, body.model, lambda _, answer: _usage(answer))
    answers, headers = await serve(services.llm, policy, school_id, keys, compute, route="chat", costing=costing)
    headers.pop("X-Cache-Hits", None)
    return Response(orjson.dumps(answers[0]), media_type="application/json", headers=headers)


def _usage(answer: dict[str, Any]) -> int:
    """The answer's total tokens (0 when it has no usage)."""
    usage = answer.get("usage")
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else 0
