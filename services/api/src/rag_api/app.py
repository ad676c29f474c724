"""The app factory: routes, error handlers, middleware, and a lifespan that builds per-worker clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI

from rag_api.access_log import configure_logging
from rag_api.auth import KeyRing
from rag_api.cache import CacheManager, build_cache, get_embedding_cache, get_llm_cache, reset_caches
from rag_api.config import Settings, get_settings
from rag_api.deps import Services
from rag_api.errors import install_error_handlers
from rag_api.middleware import ServiceMiddleware
from rag_api.monitoring import CacheExporter, ModelPrices, SchoolLabels
from rag_api.routes import cache_routes, chat, embeddings, health
from rag_api.upstream import Upstream

__all__ = ["create_app"]

log = logging.getLogger("rag_api")


def create_app(
    settings: Settings | None = None,
    *,
    upstream_http_client: httpx2.AsyncClient | None = None,
    caches: tuple[CacheManager, CacheManager] | None = None,
) -> FastAPI:
    """The API. Without arguments it uses the process-wide settings and caches (`get_embedding_cache()`...);
    tests pass their own settings, an upstream HTTP client (e.g. over ASGI) or ready-made cache managers."""
    conf = settings or get_settings()
    configure_logging(conf.log_level, conf.log_format, access=conf.access_log)
    school_labels = SchoolLabels(conf.metrics_max_schools)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Built here, per worker and after any fork, never at import time.
        shared = caches is None and settings is None
        if caches is not None:
            emb, llm = caches
        elif shared:
            emb, llm = get_embedding_cache(), get_llm_cache()
        else:
            emb = build_cache("embedding", conf, default_ttl=conf.embedding_cache_ttl)
            llm = build_cache("llm", conf, default_ttl=conf.llm_cache_ttl)
        services = Services(
            settings=conf,
            keys=KeyRing.from_settings(conf),
            upstream=Upstream.from_settings(conf, upstream_http_client),
            embeddings=emb,
            llm=llm,
            prices=ModelPrices(conf.model_prices),
        )
        app.state.services = services
        school_labels.use(services.keys.schools)
        exporter = CacheExporter((emb, llm), conf.metrics_interval)
        try:
            await emb.start()
            await llm.start()
            if conf.cache_prewarm_seconds:
                for cache in (emb, llm):
                    report = await cache.prewarm(
                        seconds=conf.cache_prewarm_seconds / 2, max_bytes=conf.cache_prewarm_max_bytes // 2
                    )
                    log.info("%s cache prewarmed from Redis: %s", cache.name, report)
            exporter.start()
            services.ready = True
            log.info("instance %s ready (upstream %s)", conf.instance_id, conf.upstream_base_url)
            yield
        finally:
            services.ready = False
            await exporter.aclose()
            await services.upstream.aclose()
            await emb.aclose()
            await llm.aclose()
            if shared:
                reset_caches()

    app = FastAPI(
        title="RAG cache API",
        version="1.0.0",
        summary="OpenAI-compatible embeddings and chat completions behind a tenant-aware, tiered cache.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        ServiceMiddleware,
        instance=conf.instance_id,
        max_body=conf.max_request_bytes,
        request_timeout=conf.request_timeout,
        school_label=school_labels,
    )
    for module in (embeddings, chat, cache_routes, health):
        app.include_router(module.router)
    return app
