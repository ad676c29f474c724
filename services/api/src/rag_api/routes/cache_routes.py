"""`/cache/health`, `/cache/stats`, `/cache/clear`, `/cache/delete`: the operational routes.

Clear and delete act on an explicit scope (`rag_api.auth.school_in_scope`): nothing is guessed from a missing,
empty or conflicting one. Delete computes the keys exactly as the cached route does, from the same body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag_api.auth import ALL_SCHOOLS, school_in_scope
from rag_api.cache import CacheManager
from rag_api.caching import namespace_of
from rag_api.deps import PrincipalDep, Services, ServicesDep, parse_json
from rag_api.request_keys import namespaced
from rag_api.routes import chat, embeddings
from rag_api.routes.schema import detail_responses

__all__ = ["router"]

router = APIRouter(prefix="/cache", tags=["cache"])

# The Redis INFO figures worth showing; anything else the cache reports is passed through unfiltered.
_REDIS_FIGURES = (
    "redis_version",
    "uptime_in_seconds",
    "connected_clients",
    "total_commands_processed",
    "instantaneous_ops_per_sec",
    "keyspace_hits",
    "keyspace_misses",
    "used_memory",
    "used_memory_human",
    "maxmemory",
    "maxmemory_policy",
    "evicted_keys",
    "expired_keys",
    "primaries",  # a cluster: how many primaries the memory figures add up
)

_MAX_SCHOOL_ID = 2**63 - 1
SchoolId = Field(default=None, gt=0, le=_MAX_SCHOOL_ID, description="the school (admin; a tenant's own by default)")


class ClearScope(BaseModel):
    """The body of `/cache/clear`: one school, or (admin only) every school."""

    model_config = ConfigDict(extra="forbid", strict=True)

    school_id: int | None = SchoolId
    all: Literal[True] | None = Field(default=None, description="every school (admin only)")


class DeleteRequest(BaseModel):
    """The body of `/cache/delete`: which route's cached answer, to which request (the same body as the route)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    route: Literal["/v1/embeddings", "/v1/chat/completions"]
    request: dict[str, Any]
    school_id: int | None = SchoolId


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _scope_body(request: Request, model: type[BaseModel], *, optional: bool) -> Any:
    """The body as `model`, or a 400 naming what is wrong (an empty body is `model()` when `optional`)."""
    raw = await request.body()
    if not raw.strip():
        if optional:
            return model()
        raise HTTPException(400, detail="a JSON body is required")
    try:
        parsed = parse_json(raw)
    except RequestValidationError:
        raise HTTPException(400, detail="the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise HTTPException(400, detail="the body must be a JSON object")
    try:
        return model.model_validate(parsed)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
        raise HTTPException(400, detail=f"invalid body: {problems}") from None


def _no_query_scope(request: Request) -> None:
    for name in ("school_id", "all"):
        if name in request.query_params:
            raise HTTPException(400, detail=f"the scope goes in the JSON body ({name!r}), not the query string")


@router.get("/health")
async def cache_health(services: ServicesDep) -> dict[str, Any]:
    """200 while this process can serve; `degraded` when Redis is enabled but not answering."""
    emb, llm, topology = await asyncio.gather(
        services.embeddings.health(), services.llm.health(), services.embeddings.topology()
    )
    available = bool(emb.get("redis_available")) and bool(llm.get("redis_available"))
    enabled = bool(emb.get("redis_enabled", services.settings.redis_enabled))
    return {
        "status": "healthy" if available or not enabled else "degraded",
        "embedding_cache": emb.get("status", "ok"),
        "llm_cache": llm.get("status", "ok"),
        "redis_available": available,
        "redis_enabled": enabled,
        "breaker": {"embedding": emb.get("breaker"), "llm": llm.get("breaker")},
        # Which Redis topology, which primary, and whether a failover is under way (null without Redis).
        "redis_topology": topology,
        "instance": services.settings.instance_id,
    }


@router.get("/stats", responses=detail_responses(401, 403))
async def cache_stats(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The admin's view of this instance: cache figures of every school and, when Redis answers, its server
    figures (a tenant key: 403, the figures are not per school)."""
    if not principal.is_admin:
        raise HTTPException(403, detail="/cache/stats needs the admin key")
    info, topology = await asyncio.gather(services.embeddings.redis_info(), services.embeddings.topology())
    redis: dict[str, Any] | None = None
    if info is not None:
        redis = {name: info[name] for name in _REDIS_FIGURES if name in info}
        hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
        redis["keyspace_hit_rate"] = round(hits / (hits + misses), 4) if hits + misses else 0.0
    return {
        "instance": services.settings.instance_id,
        "embedding": services.embeddings.stats(),
        "llm": services.llm.stats(),
        "redis": redis,
        "redis_available": redis is not None,
        "redis_topology": topology,
        # The model's circuit breakers in this process (rag_api.model_breaker), by model name.
        "upstream": {"breakers": services.upstream.breakers.snapshot()},
    }


_CLEAR_BODY = {"content": {"application/json": {"schema": ClearScope.model_json_schema()}}}


@router.post("/clear", responses=detail_responses(400, 401, 403, 503), openapi_extra={"requestBody": _CLEAR_BODY})
async def cache_clear(
    request: Request,
    principal: PrincipalDep,
    cache: Literal["all", "embedding", "llm"] = Query(default="all"),
) -> dict[str, Any]:
    """Clear one school (`{"school_id": N}`, or the tenant's own with an empty body) or, admin only, every
    school (`{"all": true}`); the admin's X-School-Id header is an alias of school_id."""
    _no_query_scope(request)
    body: ClearScope = await _scope_body(request, ClearScope, optional=True)
    scope = school_in_scope(principal, request.headers.get("x-school-id"), body.school_id, every_school=bool(body.all))
    services = _services(request)
    cleared: dict[str, int] = {}
    if cache in ("all", "embedding"):
        cleared["embedding"] = await services.embeddings.clear(school_id=scope)
    if cache in ("all", "llm"):
        cleared["llm"] = await services.llm.clear(school_id=scope)
    return {"cleared": cleared, "school_id": scope if scope is not ALL_SCHOOLS else "all"}


_DELETE_BODY = {"requestBody": {"content": {"application/json": {"schema": DeleteRequest.model_json_schema()}}}}


@router.post("/delete", responses=detail_responses(400, 401, 403, 422, 503), openapi_extra=_DELETE_BODY)
async def cache_delete(request: Request, principal: PrincipalDep) -> dict[str, int]:
    """Drop exactly the cached answer of one request to a cached route, in the caller's school (the admin
    names it with school_id); `deleted` counts the entries removed (for an embeddings batch, one per input)."""
    _no_query_scope(request)
    body: DeleteRequest = await _scope_body(request, DeleteRequest, optional=False)
    school_id = school_in_scope(principal, request.headers.get("x-school-id"), body.school_id)
    assert school_id is not None
    services = _services(request)
    cache, keys, body_cache = _route_keys(body, services)
    namespace = namespace_of(body_cache)
    removed = await asyncio.gather(*(cache.delete(namespaced(namespace, k), school_id=school_id) for k in set(keys)))
    return {"deleted": sum(removed)}


def _route_keys(body: DeleteRequest, services: Services) -> tuple[CacheManager, list[str], Any]:
    """The cache, route keys and `cache` object of the request `body` names, validated as its route does."""
    routes: dict[str, tuple[CacheManager, type[BaseModel], Callable[[Any, Services], tuple[Any, list[str]]]]] = {
        "/v1/embeddings": (services.embeddings, embeddings.EmbeddingsRequest, embeddings.cache_keys),
        "/v1/chat/completions": (services.llm, chat.ChatRequest, chat.cache_keys),
    }
    cache, model, keys_of = routes[body.route]
    try:
        request = model.model_validate(body.request)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", "request", *e["loc"])} for e in errors]) from None
    _, keys = keys_of(request, services)
    return cache, keys, getattr(request, "cache", None)
