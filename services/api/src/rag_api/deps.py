"""Per-worker services and request context, exposed to routes as `Annotated` dependency aliases.

The dependencies are `async def` although they never await: FastAPI runs plain `def` ones in a thread pool.
The hot route (`/v1/embeddings`) is a `DirectRoute` and calls the plain functions (`tenant_of`,
`cache_mode_of`, `json_body`) itself: FastAPI's per-request machinery costs about 30 µs and each
dependency several more, a large share of a cache hit that takes about 60 µs of our own work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from rag_api.access_log import note_school
from rag_api.auth import KeyRing, Principal, school_for_admin_op, school_for_data
from rag_api.cache import CacheManager
from rag_api.config import Settings
from rag_api.monitoring import ModelPrices
from rag_api.upstream import Upstream

__all__ = [
    "AdminScopeDep",
    "CacheMode",
    "CacheModeDep",
    "DirectRoute",
    "PrincipalDep",
    "Services",
    "ServicesDep",
    "TenantDep",
    "cache_mode_of",
    "json_body",
    "tenant_of",
]

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class Services:
    """What one worker builds in its lifespan and every request shares."""

    settings: Settings
    keys: KeyRing
    upstream: Upstream
    embeddings: CacheManager
    llm: CacheManager
    ready: bool = False
    prices: ModelPrices = field(default_factory=lambda: ModelPrices({}))


class CacheMode(Enum):
    """What the request's `Cache-Control` allows: read and write, write only (no-cache), neither (no-store)."""

    NORMAL = "normal"
    NO_CACHE = "no-cache"
    NO_STORE = "no-store"


class DirectRoute(APIRoute):
    """A route whose endpoint takes the `Request` and returns a `Response` itself, so FastAPI's per-request
    work (dependencies, body parameter, response model) is skipped; it is still routed and documented
    (declare the body with `openapi_extra`), and errors still reach the app's exception handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


def tenant_of(request: Request) -> int:
    """The school a data request acts for, from its key and `X-School-Id` (401/403/400 otherwise)."""
    services: Services = request.app.state.services
    principal = services.keys.identify(request.headers.get("authorization"))
    school = school_for_data(principal, request.headers.get("x-school-id"))
    note_school(school)
    return school


def cache_mode_of(request: Request) -> CacheMode:
    """What the request's `Cache-Control` header allows."""
    raw = request.headers.get("cache-control")
    if not raw:
        return CacheMode.NORMAL
    directives = {part.strip().split("=", 1)[0].lower() for part in raw.split(",")}
    if "no-store" in directives:
        return CacheMode.NO_STORE
    if "no-cache" in directives:
        return CacheMode.NO_CACHE
    return CacheMode.NORMAL


async def json_body(request: Request, model: type[M]) -> M:
    """The body validated as `model` in one pass of pydantic's JSON parser; failures answer as FastAPI's own
    body parameters do (422, `loc` starting with "body"), including its content-type rule."""
    raw = await request.body()
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if not _is_json(request.headers.get("content-type")):
        raise RequestValidationError(
            [{"type": "model_attributes_type", "loc": ("body",), "msg": "Input should be an object", "input": None}]
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if not any(err["type"] == "json_invalid" for err in exc.errors()):
            raise _body_error(exc) from None
    # pydantic's parser refuses what the standard library accepts (lone surrogates in \u escapes): decide with
    # the standard library, as FastAPI does, so that such input meets the route's own checks (400, not 422).
    try:
        parsed: Any = json.loads(raw)
    except ValueError as exc:
        error = {"type": "json_invalid", "loc": ("body", getattr(exc, "pos", 0)), "msg": "JSON decode error"}
        raise RequestValidationError([{**error, "input": {}}]) from exc
    try:
        return model.model_validate(parsed)
    except ValidationError as exc:
        raise _body_error(exc) from None


def _body_error(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)])


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True
    kind = content_type.partition(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _principal(request: Request) -> Principal:
    services: Services = request.app.state.services
    return services.keys.identify(request.headers.get("authorization"))


async def _tenant(request: Request, principal: Annotated[Principal, Depends(_principal)]) -> int:
    school = school_for_data(principal, request.headers.get("x-school-id"))
    note_school(school)
    return school


async def _admin_scope(request: Request, principal: Annotated[Principal, Depends(_principal)]) -> int | None:
    return school_for_admin_op(principal, request.headers.get("x-school-id"))


async def _cache_mode(request: Request) -> CacheMode:
    return cache_mode_of(request)


ServicesDep = Annotated[Services, Depends(_services)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
TenantDep = Annotated[int, Depends(_tenant)]
AdminScopeDep = Annotated[int | None, Depends(_admin_scope)]
CacheModeDep = Annotated[CacheMode, Depends(_cache_mode)]
