"""The Redis tier: the only module that talks to Redis, and the only place Redis errors are translated.

One client (and pool) per process and event loop, built lazily inside the running loop: a client bound to a
loop that asyncio.run() has closed, or inherited across a fork, is never reused. Every call has a budget:
connect and read timeouts, a bounded wait for a pooled connection, and no blind retries: redis-py 8 retries
10 times with backoff by default, which would turn one dead Redis into seconds of latency per request. We
allow one immediate retry on a connection error only, which is what a pooled connection that died with a
restarted Redis needs (the retry reconnects); a timeout is never retried, so a frozen Redis costs one read
timeout, and a dead one costs a refused connect.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._budget import Budget
from ._errors import BackendBusyError, BackendCommandError, CacheBackendError
from ._resolver import ResolvingConnection

# (this caller won the lease, the value stored now, the failure a peer recorded for the key moments ago)
Claim: TypeAlias = tuple[bool, bytes | None, bytes | None]

# Compare-and-delete: a lease is released only by the holder whose token it still carries.
_RELEASE = "for _, k in ipairs(KEYS) do if redis.call('get', k) == ARGV[1] then redis.call('del', k) end end"
# Compare-and-extend: a holder keeps its leases alive while it computes, and only its own.
_EXTEND = (
    "local n = 0 for _, k in ipairs(KEYS) do "
    "if redis.call('get', k) == ARGV[1] then redis.call('pexpire', k, ARGV[2]) n = n + 1 end end return n"
)
_CLEAR_BATCH = 500
_INFO_FIELDS = (
    "redis_version", "uptime_in_seconds", "connected_clients", "used_memory", "used_memory_human",
    "maxmemory", "maxmemory_policy", "total_commands_processed", "keyspace_hits", "keyspace_misses",
    "evicted_keys", "expired_keys", "aof_enabled", "loading",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RedisOptions:
    url: str
    max_connections: int = 50
    protocol: int = 3
    connect_timeout: float = 0.25
    socket_timeout: float = 0.25
    pool_timeout: float = 0.25

    def async_client(self) -> aredis.Redis:
        """No socket timeout: RedisTier's per-operation budget bounds every call (see `_budget.py`), and the
        invalidation listener's reads wait on get_message's own timeout."""
        # Plain TCP URLs connect through the process's resolver (see `_resolver.py`); TLS and Unix sockets as
        # redis-py does.
        resolving: dict[str, Any] = {"connection_class": ResolvingConnection} if self.url.startswith("redis://") else {}
        return aredis.Redis.from_url(
            self.url,
            **resolving,
            protocol=self.protocol,
            max_connections=self.max_connections,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=None,
            retry=AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            health_check_interval=0,
        )

    def sync_client(self) -> redis.Redis:
        pool = redis.BlockingConnectionPool.from_url(
            self.url,
            protocol=self.protocol,
            max_connections=self.max_connections,
            timeout=self.pool_timeout,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.socket_timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        return redis.Redis(connection_pool=pool)


def backend_error(exc: BaseException) -> CacheBackendError:
    """Our error for a Redis, socket or timeout error: an error reply is a command error, the rest an outage."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, redis.ResponseError):
        return BackendCommandError(message)
    return CacheBackendError(message)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Redis, socket and timeout errors leave this block as CacheBackendError; cancellation passes through."""
    try:
        yield
    except (redis.RedisError, OSError, TimeoutError) as exc:
        raise backend_error(exc) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def pick_info(info: Mapping[str, Any]) -> dict[str, Any]:
    return {name: info[name] for name in _INFO_FIELDS if name in info}


class RedisTier:
    """Async Redis tier; writes can announce themselves on the invalidation channel in the same round trip.

    Every operation runs inside `_call()`: a pooled-connection slot (bounded wait), one time budget for the
    whole operation (`REDIS_SOCKET_TIMEOUT`, pipelines included; see `_budget.py`), and the translation of
    Redis errors. The budget replaces redis-py's socket timeout, whose write path costs a Task per command on
    Python 3.11; redis-py drops a connection whose command was interrupted, so none is reused half-read.
    """

    def __init__(self, options: RedisOptions, *, channel: str, factory: Callable[[], aredis.Redis] | None = None):
        self.options = options
        self.channel = channel
        self._factory = factory or options.async_client
        self._owner: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._client: aredis.Redis | None = None
        self._slots: asyncio.Semaphore | None = None
        self._budget = Budget(options.socket_timeout)

    def client(self) -> aredis.Redis:
        owner = (asyncio.get_running_loop(), os.getpid())
        if self._client is None or self._owner != owner:
            self._client, self._owner = self._factory(), owner
            self._slots = asyncio.Semaphore(self.options.max_connections)
        return self._client

    def pubsub_client(self) -> aredis.Redis:
        """A client for the invalidation listener: reads block on get_message's own timeout."""
        return self._factory()

    async def _acquire_slot(self) -> asyncio.Semaphore:
        self.client()
        slots = self._slots
        assert slots is not None
        if slots.locked():
            try:
                async with asyncio.timeout(self.options.pool_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise BackendBusyError("no Redis connection free within REDIS_POOL_TIMEOUT") from None
        else:
            await slots.acquire()
        return slots

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[aredis.Redis]:
        slots = await self._acquire_slot()
        task = self._budget.start()
        try:
            yield self.client()
        except asyncio.CancelledError:
            if self._budget.expired(task):
                raise CacheBackendError(f"Redis did not answer within {self.options.socket_timeout}s") from None
            raise
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise backend_error(exc) from exc
        finally:
            self._budget.finish(task)
            slots.release()

    async def get(self, key: str) -> bytes | None:
        # The hottest path, written out: the same steps as _call() without the generator's few µs.
        slots = await self._acquire_slot()
        task = self._budget.start()
        try:
            return await self.client().get(key)  # type: ignore[return-value]  # no decode_responses: bytes
        except asyncio.CancelledError:
            if self._budget.expired(task):
                raise CacheBackendError(f"Redis did not answer within {self.options.socket_timeout}s") from None
            raise
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise backend_error(exc) from exc
        finally:
            self._budget.finish(task)
            slots.release()

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        async with self._call() as c:
            return list(await c.mget(keys))  # type: ignore[arg-type]  # no decode_responses: bytes

    async def set(self, key: str, data: bytes, ttl: float, *, announce: bytes | None = None) -> None:
        await self.set_many({key: data}, ttl, announce=announce)

    async def set_many(self, items: Mapping[str, bytes], ttl: float, *, announce: bytes | None = None) -> None:
        if not items:
            return
        px = max(1, int(ttl * 1000))
        async with self._call() as c:
            if len(items) == 1 and announce is None:
                ((key, data),) = items.items()
                await c.set(key, data, px=px)
                return
            async with c.pipeline(transaction=False) as pipe:
                for key, data in items.items():
                    pipe.set(key, data, px=px)
                if announce is not None:
                    pipe.publish(self.channel, announce)
                await pipe.execute()

    async def delete(self, keys: Sequence[str], *, announce: bytes | None = None) -> int:
        async with self._call() as c, c.pipeline(transaction=False) as pipe:
            pipe.unlink(*keys)
            if announce is not None:
                pipe.publish(self.channel, announce)
            results = await pipe.execute()
        return int(results[0])

    async def clear(self, prefix: str, *, announce: bytes | None = None) -> int:
        """SCAN + UNLINK in batches (never KEYS or FLUSHDB), each batch in its own budget, then announce once."""
        removed, cursor, pattern = 0, 0, _glob_escape(prefix) + "*"
        while True:
            async with self._call() as c:
                cursor, keys = await c.scan(cursor=cursor, match=pattern, count=_CLEAR_BATCH)
                if keys:
                    removed += await c.unlink(*keys)
            if cursor == 0:
                break
        if announce is not None:
            async with self._call() as c:
                await c.publish(self.channel, announce)
        return removed

    async def claim(
        self, keys: Sequence[str], lease_keys: Sequence[str], failure_keys: Sequence[str], token: str, ttl: float
    ) -> list[Claim]:
        """For each key, try SET NX PX on its lease, then read the value and any recorded failure, in one
        round trip.

        The value is read after the lease attempt: a holder writes its value (or its failure) before releasing
        its lease, so a caller that wins a lease just released still sees it and computes nothing.
        """
        px = max(1, int(ttl * 1000))
        async with self._call() as c, c.pipeline(transaction=False) as pipe:
            for key, lease, failed in zip(keys, lease_keys, failure_keys, strict=True):
                pipe.set(lease, token, nx=True, px=px)
                pipe.get(key)
                pipe.get(failed)
            replies = await pipe.execute()
        return [(bool(replies[i]), replies[i + 1], replies[i + 2]) for i in range(0, len(replies), 3)]

    async def record_failure(self, failure_keys: Sequence[str], info: bytes, ttl: float, *, announce: bytes) -> None:
        """Remember a failed compute for `ttl` seconds and wake the waiters (their keys are in `announce`)."""
        px = max(1, int(ttl * 1000))
        async with self._call() as c, c.pipeline(transaction=False) as pipe:
            for failed in failure_keys:
                pipe.set(failed, info, px=px)
            pipe.publish(self.channel, announce)
            await pipe.execute()

    async def stream_add(
        self, key: str, fields: Mapping[str, bytes], *, maxlen: int, ttl: float, first: bool = False
    ) -> None:
        """Append one entry to a Redis Stream (bounded to about `maxlen`), giving it `ttl` when `first` or when
        it ends the stream."""
        async with self._call() as c, c.pipeline(transaction=False) as pipe:
            pipe.xadd(key, dict(fields), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            if first or "end" in fields:
                pipe.pexpire(key, max(1, int(ttl * 1000)))
            await pipe.execute()

    async def stream_read(self, key: str, after: str, count: int) -> list[tuple[str, dict[bytes, bytes]]]:
        """The entries of a Redis Stream after the id `after` (no blocking: callers poll)."""
        async with self._call() as c:
            replies = await c.xread({key: after}, count=count)
        if not replies:
            return []
        entries: Any = replies[key.encode()] if isinstance(replies, dict) else replies[0][1]
        if isinstance(entries, list) and entries and isinstance(entries[0], list) and len(entries) == 1:
            entries = entries[0]  # RESP3 nests the entries once more
        return [(_text(entry_id), fields) for entry_id, fields in entries]

    async def release_leases(self, keys: Sequence[str], token: str) -> None:
        if keys:
            async with self._call() as c:
                await c.eval(_RELEASE, len(keys), *keys, token)

    async def extend_leases(self, keys: Sequence[str], token: str, ttl: float) -> int:
        """Push back the expiry of the leases this token still holds; returns how many it holds."""
        if not keys:
            return 0
        async with self._call() as c:
            return int(await c.eval(_EXTEND, len(keys), *keys, token, max(1, int(ttl * 1000))))

    async def ping(self) -> bool:
        async with self._call() as c:
            return bool(await c.ping())

    async def info(self) -> dict[str, Any]:
        async with self._call() as c:
            return pick_info(await c.info())

    async def reset_connections(self) -> None:
        """Drop every pooled connection: after Redis died they are all broken, and each would fail once."""
        if self._client is not None:
            with translate_errors():
                await self._client.connection_pool.disconnect()

    async def aclose(self) -> None:
        client, self._client, self._owner = self._client, None, None
        if client is not None:
            with translate_errors():
                await client.aclose()


class SyncRedisTier:
    """The synchronous twin for code that is not async: its own client and pool, the same key layout."""

    def __init__(self, options: RedisOptions, *, channel: str, factory: Callable[[], redis.Redis] | None = None):
        self.channel = channel
        self._factory = factory or options.sync_client
        self._client: redis.Redis | None = None
        self._pid = os.getpid()

    def client(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            self._client, self._pid = self._factory(), os.getpid()
        return self._client

    def pubsub_client(self) -> redis.Redis:
        """A client of its own for the sync invalidation listener's thread."""
        return self._factory()

    def get(self, key: str) -> bytes | None:
        with translate_errors():
            return self.client().get(key)  # type: ignore[return-value]

    def set(self, key: str, data: bytes, ttl: float, *, announce: bytes | None = None) -> None:
        with translate_errors(), self.client().pipeline(transaction=False) as pipe:
            pipe.set(key, data, px=max(1, int(ttl * 1000)))
            if announce is not None:
                pipe.publish(self.channel, announce)
            pipe.execute()

    def delete(self, keys: Sequence[str], *, announce: bytes | None = None) -> int:
        with translate_errors(), self.client().pipeline(transaction=False) as pipe:
            pipe.unlink(*keys)
            if announce is not None:
                pipe.publish(self.channel, announce)
            return int(pipe.execute()[0])

    def clear(self, prefix: str, *, announce: bytes | None = None) -> int:
        removed = 0
        with translate_errors():
            client = self.client()
            batch: list[bytes] = []
            for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=_CLEAR_BATCH):
                batch.append(key)
                if len(batch) >= _CLEAR_BATCH:
                    removed += int(client.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(client.unlink(*batch))
            if announce is not None:
                client.publish(self.channel, announce)
        return removed

    def ping(self) -> bool:
        with translate_errors():
            client = self.client()
            client.connection_pool.disconnect()
            return bool(client.ping())

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
