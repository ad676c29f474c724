"""Streamed chat completions: Server-Sent Events in OpenAI's chunk format, from the model (relayed as the
chunks arrive, and shared with identical requests in flight on any replica: `CacheManager.stream`) or from
the cache (a replay of the stored answer).

One cache entry serves both forms: a streamed answer is stored as the `chat.completion` it assembles to,
and only when the stream ended normally (every choice has its `finish_reason`); a stream that failed, broke
off or ended without a finish is never stored. A replay sends, per choice, a role chunk, the content in
pieces of at most REPLAY_PIECE characters (cut after a space where one is near), any tool calls whole, then
the finish chunk and, with `stream_options.include_usage`, the usage chunk: no delays between them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from rag_api.cache import Broadcast, CacheManager, Lookup, StreamStart
from rag_api.errors import ApiError
from rag_api.metrics import CACHE_RESULTS
from rag_api.routes.headers import UPSTREAM_FAILURES
from rag_api.upstream import Upstream

__all__ = ["REPLAY_PIECE", "assemble", "replay_chunks", "stream_chat"]

log = logging.getLogger("rag_api")

REPLAY_PIECE = 32
_DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def assemble(chunks: list[bytes]) -> dict[str, Any]:
    """The `chat.completion` a stream of chunks makes; ValueError when it did not end normally."""
    parsed = [orjson.loads(chunk) for chunk in chunks]
    if not parsed:
        raise ValueError("the stream sent no chunk")
    head = parsed[0]
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in parsed:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for part in chunk.get("choices") or ():
            slot = choices.setdefault(
                int(part.get("index", 0)),
                {"index": int(part.get("index", 0)), "message": {"role": "assistant", "content": None},
                 "logprobs": None, "finish_reason": None},
            )  # fmt: skip
            message, delta = slot["message"], part.get("delta") or {}
            if delta.get("role"):
                message["role"] = delta["role"]
            for field in ("content", "refusal"):
                if delta.get(field) is not None:
                    message[field] = (message.get(field) or "") + delta[field]
            for call in delta.get("tool_calls") or ():
                _merge_tool_call(message.setdefault("tool_calls", []), call)
            if part.get("finish_reason"):
                slot["finish_reason"] = part["finish_reason"]
    if not choices or any(c["finish_reason"] is None for c in choices.values()):
        raise ValueError("the stream ended before every choice finished: not stored")
    completion: dict[str, Any] = {
        "id": head.get("id"),
        "object": "chat.completion",
        "created": head.get("created"),
        "model": head.get("model"),
        "choices": [choices[i] for i in sorted(choices)],
    }
    if head.get("system_fingerprint") is not None:
        completion["system_fingerprint"] = head["system_fingerprint"]
    if usage is not None:
        completion["usage"] = usage
    return completion


def _merge_tool_call(calls: list[dict[str, Any]], delta: dict[str, Any]) -> None:
    index = int(delta.get("index", len(calls)))
    while len(calls) <= index:
        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    call = calls[index]
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    function = delta.get("function") or {}
    if function.get("name"):
        call["function"]["name"] += function["name"]
    if function.get("arguments"):
        call["function"]["arguments"] += function["arguments"]


def replay_chunks(completion: dict[str, Any], *, include_usage: bool) -> list[bytes]:
    """The chunks of a stored completion, re-chunked as the module docstring says."""
    head: dict[str, Any] = {
        k: completion[k] for k in ("id", "created", "model", "system_fingerprint") if k in completion
    }
    head["object"] = "chat.completion.chunk"
    out = []

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> None:
        out.append(orjson.dumps({**head, "choices": choices, **extra}))

    for choice in completion.get("choices") or ():
        index, message = choice.get("index", 0), choice.get("message") or {}
        chunk([{"index": index, "delta": {"role": message.get("role", "assistant"), "content": ""},
                "logprobs": None, "finish_reason": None}])  # fmt: skip
        for field in ("content", "refusal"):
            for piece in _pieces(message.get(field) or ""):
                chunk([{"index": index, "delta": {field: piece}, "logprobs": None, "finish_reason": None}])
        if message.get("tool_calls"):
            calls = [{**call, "index": i} for i, call in enumerate(message["tool_calls"])]
            chunk([{"index": index, "delta": {"tool_calls": calls}, "logprobs": None, "finish_reason": None}])
        chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")}])
    if include_usage and completion.get("usage") is not None:
        chunk([], usage=completion["usage"])
    return out


def _pieces(text: str) -> list[str]:
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + REPLAY_PIECE)
        if end < len(text):
            space = text.rfind(" ", start + REPLAY_PIECE // 2, end)
            end = space + 1 if space >= 0 else end
        pieces.append(text[start:end])
        start = end
    return pieces


def _is_usage_only(chunk: bytes) -> bool:
    parsed = orjson.loads(chunk)
    return not parsed.get("choices") and parsed.get("usage") is not None


def _error_event(exc: BaseException) -> bytes:
    if isinstance(exc, ApiError):
        status, message, code = exc.status, exc.detail, exc.code
    elif isinstance(exc, TimeoutError):
        status, message, code = 504, f"the stream did not end in time: {exc}", "deadline_exceeded"
    else:
        status, message, code = 502, f"the stream failed: {exc}", "stream_failed"
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    error = {"message": message, "type": kind, "param": None, "code": code}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


async def _events(source: AsyncIterator[bytes | Lookup], *, include_usage: bool) -> AsyncIterator[bytes]:
    try:
        async for item in source:
            if isinstance(item, Lookup):  # a stored value answered instead (another replica finished first)
                for chunk in replay_chunks(item.value, include_usage=include_usage):
                    yield b"data: " + chunk + b"\n\n"
                continue
            if not include_usage and _is_usage_only(item):
                continue
            yield b"data: " + item + b"\n\n"
    except Exception as exc:  # a failure mid-stream: OpenAI's error event, then the end (no [DONE])
        log.warning("stream ended with an error: %s", exc)
        yield _error_event(exc)
        return
    yield _DONE


async def _from_upstream(upstream: Upstream, request: dict[str, Any]) -> AsyncIterator[bytes]:
    async for chunk in upstream.chat_stream(request):
        yield orjson.dumps(chunk)


async def stream_chat(
    request: dict[str, Any],
    key: str,
    *,
    school_id: int,
    cache: CacheManager,
    upstream: Upstream,
    ttl: float,
    include_usage: bool,
    use_cache: bool = True,
    store: bool = True,
) -> Response:
    """The SSE answer of a streamed chat request whose non-stream body is `request` and cache key `key`."""
    if not use_cache:  # Cache-Control no-cache / no-store: straight from the model, stored unless no-store
        direct = _bypass(Broadcast(), upstream, request, cache, key, school_id, ttl, store)
        headers = {"X-Cache": "BYPASS", "X-Cache-Tier": "none", "X-Cache-Stream": "bypass"}
        CACHE_RESULTS.labels("chat_stream", "BYPASS").inc()
        return StreamingResponse(_events(direct, include_usage=include_usage), media_type="text/event-stream",
                                 headers={**SSE_HEADERS, **headers})  # fmt: skip
    found = await cache.stream(
        key,
        lambda: _from_upstream(upstream, request),
        assemble,
        ttl=ttl,
        school_id=school_id,
        failures=UPSTREAM_FAILURES,
    )
    if isinstance(found, Lookup):
        # Every event of a replay is known at once: one body, which the client still reads as a stream (a
        # StreamingResponse sends each event as a write of its own: half the throughput of a plain hit).
        headers = {"X-Cache": "HIT", "X-Cache-Tier": found.tier, "X-Cache-Stream": "replay"}
        CACHE_RESULTS.labels("chat_stream", "HIT").inc()
        body = b"".join(b"data: " + c + b"\n\n" for c in replay_chunks(found.value, include_usage=include_usage))
        return Response(body + _DONE, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    assert isinstance(found, StreamStart)
    headers = {"X-Cache": "MISS", "X-Cache-Tier": "none", "X-Cache-Stream": found.role}
    CACHE_RESULTS.labels("chat_stream", "MISS").inc()
    return StreamingResponse(
        _events(found.broadcast.read(), include_usage=include_usage),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
    )


async def _bypass(
    broadcast: Broadcast,
    upstream: Upstream,
    request: dict[str, Any],
    cache: CacheManager,
    key: str,
    school_id: int,
    ttl: float,
    store: bool,
) -> AsyncIterator[bytes | Lookup]:
    async for chunk in _from_upstream(upstream, request):
        broadcast.chunks.append(chunk)
        yield chunk
    if store:
        await cache.set(key, assemble(broadcast.chunks), ttl=ttl, school_id=school_id)
