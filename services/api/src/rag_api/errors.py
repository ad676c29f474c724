"""Every error leaves as JSON: OpenAI's error envelope on `/v1/*` (what the official SDKs parse into their
exception classes), `{"detail": ...}` on every other route (the contract).

ApiError                          one error with an HTTP status (and optional headers, e.g. Retry-After)
├── UpstreamError                 the model upstream failed or could not be reached: 502
│   ├── UpstreamTimeoutError      it did not answer within the request's budget: 504
│   └── UpstreamRejectedError     it refused the request with a 4xx, passed on as is (429 keeps Retry-After)
└── (HTTPException, RequestValidationError, CacheUnavailableError, InvalidKeyError and
     DeadlineExceededError are mapped here too)
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

from rag_api.cache import CacheUnavailableError, DeadlineExceededError, InvalidKeyError

__all__ = [
    "ApiError",
    "UpstreamError",
    "UpstreamRejectedError",
    "UpstreamTimeoutError",
    "error_response",
    "install_error_handlers",
    "is_openai_path",
]

log = logging.getLogger("rag_api")

# OpenAI's `error.type` values by status; the SDKs pick their exception class by status alone.
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """An error the API answers with `status`, a human `detail`, an optional machine `code` and headers."""

    status = 500
    code: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})


class UpstreamError(ApiError):
    """The model upstream answered with a server error or could not be reached."""

    status = 502
    code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    """The model upstream did not answer within UPSTREAM_TIMEOUT or the request's deadline."""

    status = 504
    code = "upstream_timeout"


class UpstreamRejectedError(UpstreamError):
    """The model upstream refused the request with a 4xx: its status (and Retry-After) reach the client."""

    code = "upstream_rejected"


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/")


def error_response(
    status: int,
    detail: Any,
    headers: Mapping[str, str] | None = None,
    *,
    openai: bool = False,
    code: str | None = None,
    param: str | None = None,
) -> Response:
    """The one error body: OpenAI's envelope when `openai`, else `{"detail": ...}`."""
    if openai:
        message = detail if isinstance(detail, str) else _summary(detail)
        kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    else:
        body = {"detail": detail}
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def _summary(errors: Any) -> str:
    """One sentence from FastAPI's list of validation errors: where and what, for the first few."""
    if isinstance(errors, list) and errors:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return "invalid request: " + "; ".join(parts) + more
    return "invalid request"


def _safe_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic's `input`/`ctx` may hold undecodable bytes or huge inputs: keep only what cannot fail to encode.
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type"))}
        for err in exc.errors()
    ]


def _param(errors: list[dict[str, Any]]) -> str | None:
    loc = [p for p in errors[0]["loc"] if p != "body"] if errors else []
    return ".".join(loc) or None


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every known failure into a 4xx/5xx JSON answer."""

    def answer(
        request: Request, status: int, detail: Any, headers: Mapping[str, str] | None = None, **kw: Any
    ) -> Response:
        return error_response(status, detail, headers, openai=is_openai_path(request.url.path), **kw)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return answer(request, exc.status_code, exc.detail, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = _safe_errors(exc)
        return answer(request, 422, errors, code="invalid_request", param=_param(errors))

    async def on_api(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.status >= 500:
            log.warning("answering %d: %s", exc.status, exc.detail)
        return answer(request, exc.status, exc.detail, exc.headers, code=exc.code)

    async def on_deadline(request: Request, exc: Exception) -> Response:
        log.warning("answering 504: %s", exc)
        return answer(request, 504, f"no answer within the request's time budget: {exc}", code="deadline_exceeded")

    async def on_cache_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("cache unavailable: %s", exc)
        return answer(request, 503, f"cache unavailable: {exc}", {"Retry-After": "1"}, code="cache_unavailable")

    async def on_invalid_key(request: Request, exc: Exception) -> Response:
        return answer(request, 400, f"invalid cache key or school: {exc}", code="invalid_request")

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return answer(request, 500, "internal error", code="internal_error")

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ApiError, on_api)
    app.add_exception_handler(DeadlineExceededError, on_deadline)
    app.add_exception_handler(CacheUnavailableError, on_cache_unavailable)
    app.add_exception_handler(InvalidKeyError, on_invalid_key)
    app.add_exception_handler(Exception, on_unexpected)
