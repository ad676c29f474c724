"""The process-wide managers, built from Settings on first use (never at import time)."""

from __future__ import annotations

import threading

from ..config import Settings, get_settings
from ._manager import CacheManager, CachePolicy
from ._memory import MemoryTier
from ._redis import RedisOptions, RedisTier, SyncRedisTier

_managers: dict[str, CacheManager] = {}
_lock = threading.Lock()


def build_cache(name: str, settings: Settings, *, default_ttl: float | None = None) -> CacheManager:
    """A new manager for `name`, configured from `settings`."""
    memory = MemoryTier(
        max_entries=settings.cache_max_size,
        max_bytes=settings.cache_max_bytes,
        ttl_max=settings.cache_memory_ttl_max,
        tenant_share=settings.cache_tenant_max_share,
    )
    policy = CachePolicy(
        default_ttl=default_ttl or settings.cache_default_ttl,
        fallback_enabled=settings.cache_fallback_enabled,
        probe_interval=settings.cache_breaker_probe_interval,
        lease_ttl=settings.cache_lease_ttl,
        lease_wait=settings.cache_lease_wait,
        lease_poll_interval=settings.cache_lease_poll_interval,
        ttl_jitter=settings.cache_ttl_jitter,
        early_refresh_beta=settings.cache_early_refresh_beta,
        breaker_failure_threshold=settings.cache_breaker_failure_threshold,
        stale_if_error=settings.cache_stale_if_error,
        failure_ttl=settings.cache_failure_ttl,
        tenant_write_rate=settings.cache_tenant_write_rate,
        tenant_write_burst=settings.cache_tenant_write_burst,
        stream_max_seconds=settings.cache_stream_max_seconds,
    )
    if not settings.redis_enabled:
        return CacheManager(name, memory=memory, policy=policy)
    options = RedisOptions(
        url=settings.redis_url,
        max_connections=settings.redis_max_connections,
        protocol=settings.redis_protocol,
        connect_timeout=settings.redis_connect_timeout,
        socket_timeout=settings.redis_socket_timeout,
        pool_timeout=settings.redis_pool_timeout,
        mode=settings.redis_mode,
        sentinels=settings.redis_sentinels,
        sentinel_master=settings.redis_sentinel_master,
        cluster_nodes=settings.redis_cluster_nodes,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
    )
    channel = f"cache:{name}:invalidations"
    return CacheManager(
        name,
        memory=memory,
        redis=RedisTier(options, channel=channel),
        sync_redis=SyncRedisTier(options, channel=channel),
        policy=policy,
    )


def _shared(name: str, default_ttl: int) -> CacheManager:
    with _lock:
        if name not in _managers:
            _managers[name] = build_cache(name, get_settings(), default_ttl=default_ttl)
        return _managers[name]


def get_embedding_cache() -> CacheManager:
    return _shared("embedding", get_settings().embedding_cache_ttl)


def get_llm_cache() -> CacheManager:
    return _shared("llm", get_settings().llm_cache_ttl)


def reset_caches() -> None:
    """Forget the process-wide managers (tests; a new configuration). Close them first where they ran."""
    with _lock:
        _managers.clear()
