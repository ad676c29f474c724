"""The API app in-process for unit tests: the stub over ASGI as its upstream, fakeredis behind its caches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import fakeredis
import httpx
import httpx2
from fastapi import FastAPI
from rag_api.app import create_app
from rag_api.cache import CacheManager, RedisOptions, RedisTier, SyncRedisTier, build_cache
from rag_api.config import Settings
from upstream_stub import create_app as create_stub
from upstream_stub.app import StubState

__all__ = ["ADMIN", "T123", "T456", "Api", "make_settings", "open_api"]

T123 = {"Authorization": "Bearer demo-school-123"}
T456 = {"Authorization": "Bearer demo-school-456"}
ADMIN = {"Authorization": "Bearer demo-admin"}


@dataclass
class Api:
    client: httpx.AsyncClient
    stub: StubState
    redis: fakeredis.FakeServer
    app: FastAPI
    embeddings: CacheManager
    llm: CacheManager


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"upstream_base_url": "http://stub/v1", "instance_id": "unit", "log_level": "warning"}
    return Settings(_env_file=None, **{**base, **overrides})  # type: ignore[call-arg]


@asynccontextmanager
async def open_api(
    *,
    server: fakeredis.FakeServer | None = None,
    upstream: httpx2.AsyncClient | None = None,
    stub: StubState | None = None,
    **overrides: Any,
) -> AsyncIterator[Api]:
    """A running app with `overrides` on top of small test settings; apps given one `server` share Redis."""
    settings = make_settings(**{"max_batch_size": 8, "max_input_chars": 100, "max_request_bytes": 20_000, **overrides})
    server = server or fakeredis.FakeServer()
    stub_state = stub or StubState(latency_ms=0, dim=8)
    caches = []
    for name in ("embedding", "llm"):
        cache = build_cache(name, settings.model_copy(update={"redis_enabled": False}))
        options = RedisOptions(url="redis://fake")
        cache.redis = RedisTier(options, channel=name, factory=lambda: fakeredis.FakeAsyncRedis(server=server))
        cache.sync_redis = SyncRedisTier(options, channel=name, factory=lambda: fakeredis.FakeRedis(server=server))
        caches.append(cache)
    upstream = upstream or httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_stub(stub_state)))
    app = create_app(settings, upstream_http_client=upstream, caches=(caches[0], caches[1]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(client, stub_state, server, app, caches[0], caches[1])
