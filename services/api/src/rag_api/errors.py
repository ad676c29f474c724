"""Every error leaves as JSON with a `detail` (the contract) and an OpenAI-style `error` object (for SDKs).

ApiError                      one error with an HTTP status
├── UpstreamError             the model upstream failed: 502
│   └── UpstreamTimeoutError  it did not answer in time: 504
└── (HTTPException, RequestValidationError, CacheUnavailableError, InvalidKeyError are mapped here too)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from rag_api.cache import CacheUnavailableError, InvalidKeyError

__all__ = ["ApiError", "UpstreamError", "UpstreamTimeoutError", "error_response", "install_error_handlers"]

log = logging.getLogger("rag_api")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}


class ApiError(Exception):
    """An error the API answers with `status` and a human `detail`."""

    status = 500

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status


class UpstreamError(ApiError):
    """The model upstream answered with an error or could not be reached."""

    status = 502


class UpstreamTimeoutError(UpstreamError):
    """The model upstream did not answer within UPSTREAM_TIMEOUT."""

    status = 504


def error_response(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> Response:
    """The one error body: `{"detail": ..., "error": {"message", "type", "code"}}`."""
    message = detail if isinstance(detail, str) else "invalid request"
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"detail": detail, "error": {"message": message, "type": kind, "code": status}}
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def _safe_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic's `input`/`ctx` may hold undecodable bytes or huge inputs: keep only what cannot fail to encode.
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type"))}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every known failure into a 4xx/5xx JSON answer."""

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, exc.detail, exc.headers)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, _safe_errors(exc))

    async def on_api(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.status >= 500:
            log.warning("answering %d: %s", exc.status, exc.detail)
        return error_response(exc.status, exc.detail)

    async def on_cache_unavailable(_: Request, exc: Exception) -> Response:
        log.warning("cache unavailable: %s", exc)
        return error_response(503, f"cache unavailable: {exc}", {"Retry-After": "1"})

    async def on_invalid_key(_: Request, exc: Exception) -> Response:
        return error_response(400, f"invalid cache key or school: {exc}")

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error")

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ApiError, on_api)
    app.add_exception_handler(CacheUnavailableError, on_cache_unavailable)
    app.add_exception_handler(InvalidKeyError, on_invalid_key)
    app.add_exception_handler(Exception, on_unexpected)
