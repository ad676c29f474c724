"""Which Redis the cache talks to, and the redis-py client for it: one standalone server (`REDIS_URL`), a
primary found through Sentinel (`redis.asyncio.sentinel.Sentinel.master_for`), or a Redis Cluster
(`redis.asyncio.cluster.RedisCluster`). Clients are built here and used only by `_redis.py`, which owns
their budgets and translates their errors; nothing here calls Redis.

Every client gets the same budget settings: a connect timeout, at most one immediate retry on a connection
error (redis-py's default of several retries with backoff would turn a dead node into seconds per request),
no health-check pings. The Sentinel client rediscovers the primary on every new connection, so after a
failover the next connection (the guard's probe drops the pool) goes to the new primary; the Cluster client
refreshes its slot map after a connection error or a MOVED reply.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from ._resolver import ResolvingConnection

__all__ = ["AsyncClient", "Mode", "RedisOptions", "SyncClient"]

Mode = Literal["standalone", "sentinel", "cluster"]
Address = tuple[str, int]
AsyncClient: TypeAlias = "aredis.Redis | AsyncRedisCluster"
SyncClient: TypeAlias = "redis.Redis | RedisCluster"


class _SentinelManaged(aredis.Redis):
    """The primary's client, which also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        await self.connection_pool.sentinel_manager.aclose()  # type: ignore[attr-defined]


class _SharedDiscoveryPool(SentinelConnectionPool):
    """Concurrent new connections share one question to the sentinels ("which is the primary?") instead of
    asking once each: a burst of 100 calls on a cold pool otherwise opens 100 sentinel connections first,
    and under load outlasts the per-call budget. The next connection after it asks again (a failover)."""

    _pending: asyncio.Future[Any] | None = None

    async def get_master_address(self) -> Any:
        pending = self._pending
        if pending is None or pending.done() or pending.get_loop() is not asyncio.get_running_loop():
            discovery = super().get_master_address()  # type: ignore[no-untyped-call]  # untyped in redis-py
            pending = self._pending = asyncio.ensure_future(discovery)
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even with no waiter
        return await asyncio.shield(pending)


class _SyncSentinelManaged(redis.Redis):
    def close(self) -> None:
        super().close()
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            sentinel.close()


@dataclass(frozen=True, slots=True)
class RedisOptions:
    url: str
    max_connections: int = 50
    protocol: int = 3
    connect_timeout: float = 0.25
    socket_timeout: float = 0.25
    pool_timeout: float = 0.25
    mode: Mode = "standalone"
    sentinels: tuple[Address, ...] = ()
    sentinel_master: str = "mymaster"
    cluster_nodes: tuple[Address, ...] = ()
    password: str | None = field(default=None, repr=False)  # never in a log line

    @property
    def cluster(self) -> bool:
        return self.mode == "cluster"

    def _auth(self) -> dict[str, Any]:
        return {"password": self.password} if self.password is not None else {}

    def async_client(self) -> AsyncClient:
        """No socket timeout: RedisTier's per-operation budget bounds every call (see `_budget.py`), and the
        invalidation listener's reads wait on get_message's own timeout."""
        common: dict[str, Any] = {
            "protocol": self.protocol,
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": None,
            "retry": AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            "health_check_interval": 0,
            **self._auth(),
        }
        if self.mode == "sentinel":
            manager = AsyncSentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                list(self.sentinels),
                sentinel_kwargs={"socket_connect_timeout": self.connect_timeout, "socket_timeout": self.socket_timeout},
            )
            return cast(
                aredis.Redis,
                manager.master_for(
                    self.sentinel_master,
                    redis_class=_SentinelManaged,
                    connection_pool_class=_SharedDiscoveryPool,
                    max_connections=self.max_connections,
                    **common,
                ),
            )
        if self.mode == "cluster":
            nodes = [AsyncClusterNode(host, port) for host, port in self.cluster_nodes]
            # Per node: the calls RedisTier lets through at once, plus the connection the invalidation listener
            # borrows from the node serving its channel.
            return AsyncRedisCluster(startup_nodes=nodes, max_connections=self.max_connections + 1, **common)
        # Plain TCP URLs connect through the process's resolver (see `_resolver.py`); TLS and Unix sockets as
        # redis-py does.
        resolving: dict[str, Any] = {"connection_class": ResolvingConnection} if self.url.startswith("redis://") else {}
        return aredis.Redis.from_url(self.url, **resolving, max_connections=self.max_connections, **common)

    def sync_client(self) -> SyncClient:
        common: dict[str, Any] = {
            "protocol": self.protocol,
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            **self._auth(),
        }
        if self.mode == "sentinel":
            manager = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                list(self.sentinels),
                sentinel_kwargs={"socket_connect_timeout": self.connect_timeout, "socket_timeout": self.socket_timeout},
            )
            master = manager.master_for(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                self.sentinel_master, redis_class=_SyncSentinelManaged, **common
            )
            return cast(redis.Redis, master)
        if self.mode == "cluster":
            nodes = [ClusterNode(host, port) for host, port in self.cluster_nodes]  # type: ignore[no-untyped-call]
            return RedisCluster(startup_nodes=nodes, **common)
        pool = redis.BlockingConnectionPool.from_url(
            self.url, max_connections=self.max_connections, timeout=self.pool_timeout, **common
        )
        return redis.Redis(connection_pool=pool)
