"""The Redis tier: the only module that talks to Redis, and the only place Redis errors are translated.

One client (and pool) per process and event loop, built lazily inside the running loop: a client bound to a
loop that asyncio.run() has closed, or inherited across a fork, is never reused. Every call has a budget:
connect and read timeouts, a bounded wait for a pooled connection, and no blind retries: redis-py 8 retries
10 times with backoff by default, which would turn one dead Redis into seconds of latency per request. We
allow one immediate retry on a connection error only, which is what a pooled connection that died with a
restarted Redis needs (the retry reconnects); a timeout is never retried, so a frozen Redis costs one read
timeout, and a dead one costs a refused connect.

The same methods serve every topology (`_topology.py` builds the client). A Redis Cluster adds three rules,
kept here: no command may span slots (MGET becomes redis-py's `mget_nonatomic`, the multi-key lease scripts
run one EVAL per key in a pipeline, UNLINK is split by redis-py), PUBLISH cannot ride in a cluster pipeline
(it follows the write; the cluster bus broadcasts it to every node, so every subscriber gets it), and a
clear scans every primary. In Sentinel and Cluster modes a clear interrupted by a failover is retried whole
against the refreshed topology (it is idempotent) for up to `_CLEAR_RETRY_WINDOW`.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeAlias

import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from ._budget import Budget
from ._errors import BackendBusyError, BackendCommandError, CacheBackendError
from ._topology import AsyncClient, RedisOptions, SyncClient

__all__ = ["Claim", "RedisOptions", "RedisTier", "SyncRedisTier", "backend_error", "pick_info", "translate_errors"]

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
# A Sentinel or Cluster failover takes about down-after-milliseconds / cluster-node-timeout plus an election.
_CLEAR_RETRY_WINDOW = 10.0
_SLOT_MAP_BUDGET = 2.0
_INFO_FIELDS = (
    "redis_version", "uptime_in_seconds", "connected_clients", "used_memory", "used_memory_human",
    "maxmemory", "maxmemory_policy", "total_commands_processed", "keyspace_hits", "keyspace_misses",
    "evicted_keys", "expired_keys", "aof_enabled", "loading",
)  # fmt: skip


def backend_error(exc: BaseException) -> CacheBackendError:
    """Our error for a Redis, socket or timeout error: an error reply is a command error, the rest an outage."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, redis.ResponseError):
        return BackendCommandError(message)
    if isinstance(exc, redis.exceptions.MaxConnectionsError):  # a full pool is busy, not down
        return BackendBusyError(message)
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


def _sum_info(per_node: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A cluster's figures: the first primary's, with memory and counters summed over every primary (the
    cache's ceiling is the sum of the primaries' maxmemory)."""
    infos = [pick_info(info) for _, info in sorted(per_node.items())]
    merged = dict(infos[0]) if infos else {}
    for name in ("used_memory", "maxmemory", "connected_clients", "total_commands_processed", "keyspace_hits",
                 "keyspace_misses", "evicted_keys", "expired_keys"):  # fmt: skip
        if all(isinstance(info.get(name), int) for info in infos):
            merged[name] = sum(info[name] for info in infos)
    merged["primaries"] = len(infos)
    return merged


def _unlink_each(pipe: Any, keys: Sequence[str]) -> None:
    """One UNLINK per key, where keys may span slots (a cluster pipeline's own `unlink` is not queued)."""
    for key in keys:
        pipe.execute_command("UNLINK", key)


async def _sentinel_failover(manager: Any, service: str) -> bool:
    """True while the sentinels see the primary down or are failing it over (the first sentinel that answers)."""
    error: BaseException | None = None
    for sentinel in manager.sentinels:
        try:
            state = await sentinel.sentinel_master(service)
        except (redis.RedisError, OSError) as exc:
            error = exc
            continue
        flags = str(state.get("flags", ""))
        return any(flag in flags for flag in ("failover_in_progress", "s_down", "o_down", "promoted"))
    raise error or redis.ConnectionError("no sentinel answered")


class RedisTier:
    """Async Redis tier; writes can announce themselves on the invalidation channel in the same round trip.

    Every operation runs inside `_call()`: a pooled-connection slot (bounded wait), one time budget for the
    whole operation (`REDIS_SOCKET_TIMEOUT`, pipelines included; see `_budget.py`), and the translation of
    Redis errors. The budget replaces redis-py's socket timeout, whose write path costs a Task per command on
    Python 3.11; redis-py drops a connection whose command was interrupted, so none is reused half-read.
    """

    def __init__(self, options: RedisOptions, *, channel: str, factory: Callable[[], AsyncClient] | None = None):
        self.options = options
        self.channel = channel
        self._factory = factory or options.async_client
        self._owner: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._client: AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._budget = Budget(options.socket_timeout)
        self._slot_map: asyncio.Task[Any] | None = None

    @property
    def cluster(self) -> bool:
        return self.options.cluster

    def client(self) -> AsyncClient:
        owner = (asyncio.get_running_loop(), os.getpid())
        if self._client is None or self._owner != owner:
            self._client, self._owner = self._factory(), owner
            self._slots = asyncio.Semaphore(self.options.max_connections)
        return self._client

    async def open_pubsub(self) -> tuple[Any, Callable[[], Awaitable[None]]]:
        """A PubSub for the invalidation listener, and how to close it (reads block on get_message's own
        timeout). Standalone and Sentinel: on a client of its own. Cluster: on the node serving the channel's
        slot, through this tier's client, whose slot map is then loaded once for both (loading one costs a
        COMMAND reply to parse, and both retry every probe interval during a failover); PUBLISH reaches that
        node from any other over the cluster bus."""
        if not self.cluster:
            own = self._factory()
            pubsub = own.pubsub()

            async def close_own() -> None:
                with translate_errors():
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                    await own.aclose()

            return pubsub, close_own
        client = self.client()
        assert isinstance(client, AsyncRedisCluster)
        await self._load_slot_map(client)
        with translate_errors():
            cluster_pubsub = client.pubsub(node=client.get_node_from_key(self.channel))

        async def close_pubsub() -> None:
            with translate_errors():
                await cluster_pubsub.aclose()

        return cluster_pubsub, close_pubsub

    async def _acquire_slot(self) -> asyncio.Semaphore:
        client = self.client()
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
        # redis-py flags a cluster client for a new slot map on first use and after a connection error.
        if isinstance(client, AsyncRedisCluster) and client._initialize:
            try:
                await self._load_slot_map(client)
            except BaseException:
                slots.release()
                raise
        return slots

    async def _load_slot_map(self, client: AsyncRedisCluster) -> None:
        """Load a cluster's slot map once for every caller, in a task of its own with its own budget
        (`_SLOT_MAP_BUDGET`: CLUSTER SLOTS, then COMMAND, whose large reply takes a while to parse), shielded
        from the callers' budgets: redis-py closes every node connection when a load is interrupted, which
        would fail every command in flight."""
        task = self._slot_map
        if task is None or task.done():
            task = self._slot_map = asyncio.ensure_future(asyncio.wait_for(client.initialize(), _SLOT_MAP_BUDGET))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even with no waiter left
        try:
            await asyncio.shield(task)
        except TimeoutError:
            raise CacheBackendError(f"no Redis Cluster slot map within {_SLOT_MAP_BUDGET}s") from None
        except (redis.RedisError, OSError) as exc:
            raise backend_error(exc) from exc

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[Any]:
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
            if self.cluster:  # MGET may not span slots; redis-py splits it by slot, one round trip per node
                return list(await c.mget_nonatomic(keys))
            return list(await c.mget(keys))

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
                await self._execute(c, pipe, announce)

    async def _execute(self, c: Any, pipe: Any, announce: bytes | None) -> list[Any]:
        """Run `pipe`, announcing in the same round trip; a cluster pipeline refuses PUBLISH, so there the
        announcement follows the writes (never precedes them: a peer must not re-read the old value)."""
        if announce is None:
            return list(await pipe.execute())
        if not self.cluster:
            pipe.publish(self.channel, announce)
            return list(await pipe.execute())[:-1]
        results = list(await pipe.execute())
        await c.publish(self.channel, announce)
        return results

    async def delete(self, keys: Sequence[str], *, announce: bytes | None = None) -> int:
        async with self._call() as c, c.pipeline(transaction=False) as pipe:
            _unlink_each(pipe, keys) if self.cluster else pipe.unlink(*keys)
            results = await self._execute(c, pipe, announce)
        return sum(int(n) for n in results)

    async def clear(self, prefix: str, *, announce: bytes | None = None) -> int:
        """SCAN + UNLINK in batches (never KEYS or FLUSHDB), each batch in its own budget, on every primary,
        then announce once. With Sentinel or Cluster, a failover mid-clear restarts the clear on the new
        topology; a clear that saw the primaries change runs once more, for keys that moved behind it."""
        removed = [0]  # counted as each batch goes: a pass cut short by a failover has still removed keys
        if self.options.mode == "standalone":
            await self._clear_pass(prefix, removed)
        else:
            await self._clear_across_failovers(prefix, removed)
        if announce is not None:
            async with self._call() as c:
                await c.publish(self.channel, announce)
        return removed[0]

    async def _clear_across_failovers(self, prefix: str, removed: list[int]) -> None:
        deadline = time.monotonic() + _CLEAR_RETRY_WINDOW
        while True:
            try:
                before = await self.primaries()
                await self._clear_pass(prefix, removed)
                if await self.primaries() == before:
                    return
            except BackendCommandError:
                raise
            except CacheBackendError:
                if time.monotonic() >= deadline:
                    raise
                # redis-py refreshes on its own: the Sentinel pool asks for the primary on every new
                # connection, the Cluster client reloads its slot map after a connection error.
                await asyncio.sleep(self.options.socket_timeout)

    async def _clear_pass(self, prefix: str, removed: list[int]) -> None:
        pattern = _glob_escape(prefix) + "*"
        async with self._call() as c:
            nodes = c.get_primaries() if self.cluster else [None]
        for node in nodes:
            cursor = 0
            while True:
                async with self._call() as c:
                    if node is None:
                        cursor, keys = await c.scan(cursor=cursor, match=pattern, count=_CLEAR_BATCH)
                    else:
                        cursors, keys = await c.scan(cursor, match=pattern, count=_CLEAR_BATCH, target_nodes=node)
                        cursor = next(iter(cursors.values()))
                    if keys:
                        removed[0] += await c.unlink(*keys)  # in a cluster, redis-py splits it by slot
                if cursor == 0:
                    break

    async def primaries(self) -> list[str]:
        """The primaries' addresses as this client knows them (`host:port`)."""
        async with self._call() as c:
            if self.cluster:
                return sorted(node.name for node in c.get_primaries())
            if self.options.mode == "sentinel":
                host, port = await c.connection_pool.get_master_address()
                return [f"{host}:{port}"]
            kwargs = c.connection_pool.connection_kwargs
            return [f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"]

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
            await self._execute(c, pipe, announce)

    async def stream_add(
        self, key: str, fields: Mapping[str, bytes], *, maxlen: int, ttl: float, first: bool = False
    ) -> None:
        """Append one entry to a Redis Stream (bounded to about `maxlen`), giving it `ttl` when `first` or when
        it ends the stream."""
        async with self._call() as c, c.pipeline(transaction=False) as pipe:
            pipe.xadd(key, dict(fields), maxlen=maxlen, approximate=True)
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

    async def _eval_per_slot(self, script: str, keys: Sequence[str], *args: Any) -> list[Any]:
        """One EVAL over all `keys`, or in a cluster one EVAL per key in a pipeline (a script's keys may not
        span slots)."""
        async with self._call() as c:
            if not self.cluster:
                return [await c.eval(script, len(keys), *keys, *args)]
            async with c.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.eval(script, 1, key, *args)
                return list(await pipe.execute())

    async def release_leases(self, keys: Sequence[str], token: str) -> None:
        if keys:
            await self._eval_per_slot(_RELEASE, keys, token)

    async def extend_leases(self, keys: Sequence[str], token: str, ttl: float) -> int:
        """Push back the expiry of the leases this token still holds; returns how many it holds."""
        if not keys:
            return 0
        return sum(int(n) for n in await self._eval_per_slot(_EXTEND, keys, token, max(1, int(ttl * 1000))))

    async def ping(self) -> bool:
        async with self._call() as c:
            if self.cluster:  # every primary, so a breaker closes only once each slot has a primary again
                return bool(await c.ping(target_nodes=AsyncRedisCluster.PRIMARIES))
            return bool(await c.ping())

    async def topology(self) -> dict[str, Any]:
        """Which topology, which primaries, and whether a failover is under way (as Redis itself says)."""
        mode = self.options.mode
        primaries = await self.primaries()
        failover = False
        async with self._call() as c:
            if self.cluster:
                state = await c.cluster_info()
                failover = state.get("cluster_state") != "ok" or int(state.get("cluster_slots_pfail", 0)) > 0
            elif mode == "sentinel":
                failover = await _sentinel_failover(c.connection_pool.sentinel_manager, self.options.sentinel_master)
        primary = None if self.cluster else primaries[0]
        return {"mode": mode, "primary": primary, "primaries": primaries, "failover_in_progress": failover}

    async def info(self) -> dict[str, Any]:
        async with self._call() as c:
            if self.cluster:  # one primary's figures; `used_memory` and `maxmemory` summed over the primaries
                per_node = await c.info(target_nodes=AsyncRedisCluster.PRIMARIES)
                return _sum_info(per_node)
            return pick_info(await c.info())

    async def reset_connections(self) -> None:
        """Drop every pooled connection: after Redis died they are all broken, and each would fail once. A
        cluster client is rebuilt whole, so the next call starts from a fresh slot map."""
        if self._client is None:
            return
        with translate_errors():
            if isinstance(self._client, AsyncRedisCluster):
                client, self._client, self._owner = self._client, None, None
                await client.aclose()
            else:
                await self._client.connection_pool.disconnect()

    async def aclose(self) -> None:
        client, self._client, self._owner = self._client, None, None
        if client is not None:
            with translate_errors():
                await client.aclose()


class SyncRedisTier:
    """The synchronous twin for code that is not async: its own client and pool, the same key layout."""

    def __init__(self, options: RedisOptions, *, channel: str, factory: Callable[[], SyncClient] | None = None):
        self.channel = channel
        self.cluster = options.cluster
        self._factory = factory or options.sync_client
        self._client: SyncClient | None = None
        self._pid = os.getpid()

    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            self._client, self._pid = self._factory(), os.getpid()
        return self._client

    def pubsub_client(self) -> Any:
        """A client of its own for the sync invalidation listener's thread."""
        return self._factory()

    def get(self, key: str) -> bytes | None:
        with translate_errors():
            return self.client().get(key)  # type: ignore[no-any-return]

    def _execute(self, pipe: Any, announce: bytes | None) -> list[Any]:
        """As RedisTier._execute: the announcement in the same round trip, or right after it in a cluster."""
        if announce is not None and not self.cluster:
            pipe.publish(self.channel, announce)
            return list(pipe.execute())[:-1]
        results = list(pipe.execute())
        if announce is not None:
            self.client().publish(self.channel, announce)
        return results

    def set(self, key: str, data: bytes, ttl: float, *, announce: bytes | None = None) -> None:
        with translate_errors(), self.client().pipeline(transaction=False) as pipe:
            pipe.set(key, data, px=max(1, int(ttl * 1000)))
            self._execute(pipe, announce)

    def delete(self, keys: Sequence[str], *, announce: bytes | None = None) -> int:
        with translate_errors(), self.client().pipeline(transaction=False) as pipe:
            _unlink_each(pipe, keys) if self.cluster else pipe.unlink(*keys)
            return sum(int(n) for n in self._execute(pipe, announce))

    def clear(self, prefix: str, *, announce: bytes | None = None) -> int:
        removed, pattern = 0, _glob_escape(prefix) + "*"
        with translate_errors():
            client = self.client()
            for node in client.get_primaries() if self.cluster else [None]:
                cursor = 0
                while True:
                    if node is None:
                        cursor, keys = client.scan(cursor=cursor, match=pattern, count=_CLEAR_BATCH)
                    else:
                        cursors, keys = client.scan(cursor, match=pattern, count=_CLEAR_BATCH, target_nodes=node)
                        cursor = next(iter(cursors.values()))
                    if keys:
                        removed += int(client.unlink(*keys))
                    if cursor == 0:
                        break
            if announce is not None:
                client.publish(self.channel, announce)
        return removed

    def ping(self) -> bool:
        with translate_errors():
            if isinstance(self._client, RedisCluster):  # rebuilt whole: a fresh slot map after a failover
                self.close()
            client = self.client()
            if self.cluster:
                return bool(client.ping(target_nodes=RedisCluster.PRIMARIES))
            client.connection_pool.disconnect()
            return bool(client.ping())

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
