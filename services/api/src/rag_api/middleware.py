"""One pure-ASGI middleware (cheap on the hot path): body size limit, `X-Instance` and `X-Request-ID`,
request metrics, the access line (rag_api.access_log), and the request's deadline (REQUEST_TIMEOUT), which
everything the request waits on shares."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_api.access_log import (
    ACCESS_LOGGER,
    RequestRecord,
    close_request,
    new_request_id,
    open_request,
    valid_request_id,
)
from rag_api.cache import request_deadline
from rag_api.errors import error_response, is_openai_path
from rag_api.metrics import HTTP_DURATION, HTTP_REQUESTS, SCHOOL_REQUESTS, child

__all__ = ["ServiceMiddleware"]

_access = logging.getLogger(ACCESS_LOGGER)


class ServiceMiddleware:
    """Refuses bodies over `max_body` with 413, stamps `X-Instance` and `X-Request-ID` (the one nginx sent,
    or a new one) on every answer, counts it and writes its access line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        instance: str,
        max_body: int,
        request_timeout: float = 50.0,
        school_label: Callable[[int], str] = str,
    ) -> None:
        self.app = app
        self.instance = instance.encode("latin-1", "replace")
        self.instance_id = instance
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.school_label = school_label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        declared, raw_id = _scan_headers(scope)
        request_id = (raw_id and valid_request_id(raw_id)) or new_request_id()
        record = RequestRecord(request_id)
        rid = request_id.encode()
        cache = tier = b""
        if declared is not None and declared > self.max_body:
            token = open_request(record)
            try:
                await self._too_large(scope, receive, send, rid)
            finally:
                close_request(token)
            self._observe(scope, 413, started, record, cache, tier)
            return

        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    # FastAPI re-raises HTTPException from body reading, so this becomes a 413 JSON answer.
                    raise HTTPException(413, detail=f"request body larger than {self.max_body} bytes")
            return message

        async def stamped_send(message: Message) -> None:
            nonlocal status, cache, tier
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                for name, value in headers:
                    if name == b"x-cache":
                        cache = value
                    elif name == b"x-cache-tier":
                        tier = value
                message["headers"] = [*headers, (b"x-instance", self.instance), (b"x-request-id", rid)]
            await send(message)

        token = open_request(record)
        try:
            with request_deadline(self.request_timeout):
                await self.app(scope, limited_receive, stamped_send)
        finally:
            close_request(token)
            self._observe(scope, status, started, record, cache, tier)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, rid: bytes) -> None:
        response = error_response(
            413,
            f"request body larger than {self.max_body} bytes",
            openai=is_openai_path(scope.get("path", "")),
            code="request_too_large",
        )
        response.headers["x-instance"] = self.instance.decode("latin-1")
        response.headers["x-request-id"] = rid.decode()
        await response(scope, receive, send)

    def _observe(
        self, scope: Scope, status: int, started: float, record: RequestRecord, cache: bytes, tier: bytes
    ) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        # The route template, never the raw path: label values stay few whatever clients send.
        label = getattr(route, "path", None) or "unmatched"
        outcome = cache.decode() if cache else "none"
        child(HTTP_REQUESTS, label, scope.get("method", ""), str(status)).inc()
        child(HTTP_DURATION, label, outcome).observe(elapsed)
        school = record.school
        if school is not None:
            child(SCHOOL_REQUESTS, self.school_label(school), outcome).inc()
        if _access.isEnabledFor(logging.INFO):
            # A record made directly: `info()` would also walk the stack for the caller's line (~1.5 µs).
            fields = {
                "request_id": record.request_id,
                "instance": self.instance_id,
                "school": school,
                "method": scope.get("method"),
                "route": label,
                "path": scope.get("path"),
                "status": status,
                "cache": cache.decode() if cache else None,
                "tier": tier.decode() if tier else None,
                "upstream_ms": round(record.upstream_seconds * 1000, 2),
                "total_ms": round(elapsed * 1000, 2),
            }
            _access.handle(logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, "%s", (fields,), None))


def _scan_headers(scope: Scope) -> tuple[int | None, bytes | None]:
    """Content-Length (None when absent or not a number) and X-Request-ID, in one pass over the headers."""
    length: int | None = None
    request_id: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"x-request-id":
            request_id = value
    return length, request_id
