"""Per-worker services and request context, exposed to routes as `Annotated` dependency aliases.

The dependencies are `async def` although they never await: FastAPI runs plain `def` ones in a thread pool.
The cached routes are `DirectRoute`s and call the plain functions (`tenant_of`, `json_body`) themselves:
FastAPI's per-request machinery costs about 30 µs and each dependency several more, a large share of a cache
hit that takes about 60 µs of our own work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from rag_api.access_log import note_school
from rag_api.auth import KeyRing, Principal, school_for_data
from rag_api.cache import CacheManager
from rag_api.config import Settings
from rag_api.monitoring import ModelPrices
from rag_api.upstream import Upstream

__all__ = [
    "MAX_JSON_DEPTH",
    "DirectRoute",
    "PrincipalDep",
    "Services",
    "ServicesDep",
    "TenantDep",
    "json_body",
    "parse_json",
    "tenant_of",
]

M = TypeVar("M", bound=BaseModel)

# Deeper JSON is refused (400) before anything recursive sees it: the standard library's parser, pydantic and
# the cache key encoder all recurse, and pydantic's own parser stops at 200 levels. OpenAI requests, tool
# schemas included, stay far below this.
MAX_JSON_DEPTH = 64
# A string, or an unterminated one up to the end: one linear pass, never a backtracking rescan.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


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


def check_depth(raw: bytes) -> None:
    """400 when the JSON text nests arrays and objects deeper than MAX_JSON_DEPTH (strings do not count)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return  # the common case, decided at C speed
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b"", raw)):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            raise HTTPException(400, detail=f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body, depth-checked; invalid JSON answers as FastAPI's own body parsing does (422)."""
    check_depth(raw)
    try:
        return json.loads(raw)
    except ValueError as exc:
        error = {"type": "json_invalid", "loc": ("body", getattr(exc, "pos", 0)), "msg": "JSON decode error"}
        raise RequestValidationError([{**error, "input": {}}]) from exc


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
    check_depth(raw)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if not any(err["type"] == "json_invalid" for err in exc.errors()):
            raise _body_error(exc) from None
    # pydantic's parser refuses what the standard library accepts (lone surrogates in \u escapes): decide with
    # the standard library, as FastAPI does, so that such input meets the route's own checks (400, not 422).
    parsed = parse_json(raw)
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


ServicesDep = Annotated[Services, Depends(_services)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
TenantDep = Annotated[int, Depends(_tenant)]
