"""`/healthz` (the process runs), `/readyz` (it can serve), `/metrics` (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from rag_api.deps import ServicesDep
from rag_api.errors import error_response
from rag_api.metrics import CONTENT_TYPE_LATEST, render
from rag_api.routes.schema import detail_responses

__all__ = ["router"]

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=detail_responses(503))
async def readyz(services: ServicesDep) -> dict[str, str] | Response:
    """Ready once the lifespan finished; not ready when Redis is down and the memory fallback is off."""
    if not services.ready:
        return error_response(503, "starting")
    if not services.settings.cache_fallback_enabled and services.settings.redis_enabled:
        health = await services.embeddings.health()
        if not health.get("redis_available"):
            return error_response(503, "Redis is unavailable and CACHE_FALLBACK_ENABLED=false")
    return {"status": "ready", "instance": services.settings.instance_id}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> Response:
    """Every worker's figures (multiprocess mode under gunicorn) in the Prometheus text format."""
    return Response(render(), media_type=CONTENT_TYPE_LATEST)
