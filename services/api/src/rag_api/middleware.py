"""One pure-ASGI middleware (cheap on the hot path): body size limit, `X-Instance`, request metrics, and the
request's deadline (REQUEST_TIMEOUT), which everything the request waits on shares."""

from __future__ import annotations

import time

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_api.cache import request_deadline
from rag_api.errors import error_response, is_openai_path
from rag_api.metrics import HTTP_DURATION, HTTP_REQUESTS, child

__all__ = ["ServiceMiddleware"]


class ServiceMiddleware:
    """Refuses bodies over `max_body` with 413, stamps `X-Instance` on every answer and counts it."""

    def __init__(self, app: ASGIApp, *, instance: str, max_body: int, request_timeout: float = 50.0) -> None:
        self.app = app
        self.instance = instance.encode("latin-1", "replace")
        self.max_body = max_body
        self.request_timeout = request_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await self._too_large(scope, receive, send)
            status = 413
            self._observe(scope, status, started)
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
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-instance", self.instance)]
            await send(message)

        try:
            with request_deadline(self.request_timeout):
                await self.app(scope, limited_receive, stamped_send)
        finally:
            self._observe(scope, status, started)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            f"request body larger than {self.max_body} bytes",
            openai=is_openai_path(scope.get("path", "")),
            code="request_too_large",
        )
        response.headers["x-instance"] = self.instance.decode("latin-1")
        await response(scope, receive, send)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        # The route template, never the raw path: label values stay few whatever clients send.
        label = getattr(route, "path", None) or "unmatched"
        child(HTTP_REQUESTS, label, scope.get("method", ""), str(status)).inc()
        child(HTTP_DURATION, label).observe(time.perf_counter() - started)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
