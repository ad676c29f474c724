"""Per-worker services and request context, exposed to routes as `Annotated` dependency aliases.

The dependencies are `async def` although they never await: FastAPI runs plain `def` ones in a thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated

from fastapi import Depends, Request

from rag_api.auth import KeyRing, Principal, school_for_admin_op, school_for_data
from rag_api.cache import CacheManager
from rag_api.config import Settings
from rag_api.upstream import Upstream

__all__ = [
    "AdminScopeDep",
    "CacheMode",
    "CacheModeDep",
    "PrincipalDep",
    "Services",
    "ServicesDep",
    "TenantDep",
]


@dataclass(slots=True)
class Services:
    """What one worker builds in its lifespan and every request shares."""

    settings: Settings
    keys: KeyRing
    upstream: Upstream
    embeddings: CacheManager
    llm: CacheManager
    ready: bool = False


class CacheMode(Enum):
    """What the request's `Cache-Control` allows: read and write, write only (no-cache), neither (no-store)."""

    NORMAL = "normal"
    NO_CACHE = "no-cache"
    NO_STORE = "no-store"


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _principal(request: Request) -> Principal:
    services: Services = request.app.state.services
    return services.keys.identify(request.headers.get("authorization"))


async def _tenant(request: Request, principal: Annotated[Principal, Depends(_principal)]) -> int:
    return school_for_data(principal, request.headers.get("x-school-id"))


async def _admin_scope(request: Request, principal: Annotated[Principal, Depends(_principal)]) -> int | None:
    return school_for_admin_op(principal, request.headers.get("x-school-id"))


async def _cache_mode(request: Request) -> CacheMode:
    raw = request.headers.get("cache-control")
    if not raw:
        return CacheMode.NORMAL
    directives = {part.strip().split("=", 1)[0].lower() for part in raw.split(",")}
    if "no-store" in directives:
        return CacheMode.NO_STORE
    if "no-cache" in directives:
        return CacheMode.NO_CACHE
    return CacheMode.NORMAL


ServicesDep = Annotated[Services, Depends(_services)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
TenantDep = Annotated[int, Depends(_tenant)]
AdminScopeDep = Annotated[int | None, Depends(_admin_scope)]
CacheModeDep = Annotated[CacheMode, Depends(_cache_mode)]
