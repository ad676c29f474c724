"""`/cache/health`, `/cache/stats`, `/cache/clear`: the seed's operational routes."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Query

from rag_api.deps import AdminScopeDep, ServicesDep

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
)


@router.get("/health")
async def cache_health(services: ServicesDep) -> dict[str, Any]:
    """200 while this process can serve; `degraded` when Redis is enabled but not answering."""
    emb, llm = await asyncio.gather(services.embeddings.health(), services.llm.health())
    available = bool(emb.get("redis_available")) and bool(llm.get("redis_available"))
    enabled = bool(emb.get("redis_enabled", services.settings.redis_enabled))
    return {
        "status": "healthy" if available or not enabled else "degraded",
        "embedding_cache": emb.get("status", "ok"),
        "llm_cache": llm.get("status", "ok"),
        "redis_available": available,
        "redis_enabled": enabled,
        "breaker": {"embedding": emb.get("breaker"), "llm": llm.get("breaker")},
        "instance": services.settings.instance_id,
    }


@router.get("/stats")
async def cache_stats(services: ServicesDep) -> dict[str, Any]:
    """This instance's cache figures and, when Redis answers, its server figures."""
    info = await services.embeddings.redis_info()
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
        # The model's circuit breakers in this process (rag_api.model_breaker), by model name.
        "upstream": {"breakers": services.upstream.breakers.snapshot()},
    }


@router.post("/clear")
async def cache_clear(
    scope: AdminScopeDep,
    services: ServicesDep,
    cache: Literal["all", "embedding", "llm"] = Query(default="all"),
) -> dict[str, Any]:
    """A tenant clears its own school; the admin clears the school named in X-School-Id, or every school."""
    cleared: dict[str, int] = {}
    if cache in ("all", "embedding"):
        cleared["embedding"] = await services.embeddings.clear(school_id=scope)
    if cache in ("all", "llm"):
        cleared["llm"] = await services.llm.clear(school_id=scope)
    return {"cleared": cleared, "school_id": scope if scope is not None else "all"}
