"""CacheManager: the seed's API, a thin front over the memory tier (`CoherentMemory`, the read rule), the
Redis tier behind its guard (`RedisGuard`: breaker, fallback, probe) and single flight (`SingleFlight`).

The async and the sync methods make the same decisions through those collaborators and differ only in I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

from ._admission import WriteAdmission
from ._breaker import CircuitBreaker
from ._coherence import CoherentMemory, Stale
from ._errors import CacheBackendError, CacheUnavailableError, InvalidKeyError
from ._guard import RedisGuard
from ._invalidation import InvalidationListener, Notice, Subscriber, ThreadedInvalidationListener
from ._keys import cache_prefix, check_cache_name, school_prefix, tenant_key
from ._lookup import UNAVAILABLE, CacheCounters, CachePolicy, Lookup, Tier, Unavailable
from ._memory import MemoryTier
from ._prewarm import PrewarmReport, prewarm_memory
from ._redis import RedisTier, SyncRedisTier
from ._seams import FlightSeams
from ._serialization import encode
from ._singleflight import FailureCodec, SingleFlight
from ._streams import Assemble, Produce, StreamFlights, StreamStart

__all__ = ["UNAVAILABLE", "CacheCounters", "CacheManager", "CachePolicy", "Lookup", "Tier"]

log = logging.getLogger("rag_api.cache")
T = TypeVar("T")


@dataclass(slots=True)
class _LoopState:
    """What belongs to one event loop: the invalidation listener, the in-process flights, spawned tasks."""

    loop: asyncio.AbstractEventLoop
    flights: SingleFlight
    streams: StreamFlights
    subscription: object = field(default_factory=object)  # this loop's listener, to CoherentMemory
    listener: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class CacheManager:
    """Memory first, then Redis; writes to both; Redis failures fall back to memory behind a circuit breaker."""

    def __init__(
        self,
        name: str,
        *,
        memory: MemoryTier,
        redis: RedisTier | None = None,
        sync_redis: SyncRedisTier | None = None,
        policy: CachePolicy | None = None,
    ) -> None:
        self.name = check_cache_name(name)
        self.policy = policy or CachePolicy()
        self.counters = CacheCounters()
        self.sender = uuid.uuid4().hex
        self._guard = RedisGuard(name, redis=redis, sync_redis=sync_redis, policy=self.policy, counters=self.counters)
        self._coherent = CoherentMemory(
            memory,
            policy=self.policy,
            counters=self.counters,
            shared=redis is not None,
            redis_down=lambda: not self._guard.breaker.closed,
        )
        self._coherent.on_keys = self._wake_waiters
        self._admission = WriteAdmission(self.policy.tenant_write_rate, self.policy.tenant_write_burst)
        self._state: _LoopState | None = None
        self._sync_listener: tuple[ThreadedInvalidationListener, int] | None = None
        self._sync_locks: dict[str, threading.Lock] = {}
        self._sync_guard = threading.Lock()
        self._fulls: dict[tuple[int | None, str], str] = {}

    # The tiers, replaceable as a whole (tests put fakeredis behind a built manager).
    @property
    def memory(self) -> MemoryTier:
        return self._coherent.memory

    @property
    def redis(self) -> RedisTier | None:
        return self._guard.redis

    @redis.setter
    def redis(self, tier: RedisTier | None) -> None:
        self._guard.redis = tier
        self._coherent.shared = tier is not None

    @property
    def sync_redis(self) -> SyncRedisTier | None:
        return self._guard.sync_redis

    @sync_redis.setter
    def sync_redis(self, tier: SyncRedisTier | None) -> None:
        self._guard.sync_redis = tier

    @property
    def breaker(self) -> CircuitBreaker:
        return self._guard.breaker

    # ----- the seed's API ------------------------------------------------------------------------------
    async def get(self, key: str, school_id: int | None = None) -> Any:
        full = self._full(key, school_id)
        mem = self._coherent
        if mem.trusted() and (stored := mem.fresh(full)) is not None:  # the memory hit, without a Lookup
            self.counters.hits += 1
            self.counters.memory_hits += 1
            return stored.value if stored.thaw is None else stored.thaw(stored.value)
        found = await self._lookup_one(full)
        return None if found is None else found.value

    async def set(self, key: str, value: Any, ttl: float | None = None, school_id: int | None = None) -> None:
        await self._store({tenant_key(self.name, school_id, key): value}, self._ttl(ttl))

    async def delete(self, key: str, school_id: int | None = None) -> bool:
        full = tenant_key(self.name, school_id, key)
        in_memory = self.memory.delete_nowait(full)
        self.counters.deletes += 1
        notice = Notice(self.sender, keys=(full,)).encode()
        removed = await self._guard.call(lambda r: r.delete([full], announce=notice))
        return in_memory if self._removal_local(removed) else bool(removed)

    async def clear(self, school_id: int | None = None) -> int:
        """Remove one school's entries (or every school's of this cache) from Redis and every memory tier."""
        prefix = cache_prefix(self.name) if school_id is None else school_prefix(self.name, school_id)
        in_memory = self.memory.delete_prefix(prefix)
        notice = Notice(self.sender, prefix=prefix).encode()
        removed = await self._guard.call(lambda r: r.clear(prefix, announce=notice))
        return in_memory if self._removal_local(removed) else int(removed)  # type: ignore[arg-type]

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        ttl: float | None = None,
        school_id: int | None = None,
    ) -> Any:
        return (await self.resolve(key, compute, ttl=ttl, school_id=school_id)).value

    # ----- lookups that say where a value came from ----------------------------------------------------
    async def lookup(self, key: str, school_id: int | None = None) -> Lookup | None:
        return await self._lookup_one(tenant_key(self.name, school_id, key))

    async def lookup_many(self, keys: Sequence[str], school_id: int | None = None) -> list[Lookup | None]:
        return await self._lookup([tenant_key(self.name, school_id, k) for k in keys])

    async def set_many(self, items: dict[str, Any], ttl: float | None = None, school_id: int | None = None) -> None:
        await self._store({tenant_key(self.name, school_id, k): v for k, v in items.items()}, self._ttl(ttl))

    async def resolve(
        self,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        ttl: float | None = None,
        school_id: int | None = None,
        *,
        failures: FailureCodec | None = None,
    ) -> Lookup:
        async def compute_one(_: list[str]) -> list[Any]:
            return [await compute()]

        return (await self.resolve_many([key], compute_one, ttl=ttl, school_id=school_id, failures=failures))[0]

    async def resolve_many(
        self,
        keys: Sequence[str],
        compute_many: Callable[[list[str]], Awaitable[Sequence[Any]]],
        ttl: float | None = None,
        school_id: int | None = None,
        *,
        failures: FailureCodec | None = None,
    ) -> list[Lookup]:
        """Every key's value, computing only what nobody has: one compute per key across callers and processes.

        `compute_many(keys)` gets the missing keys (as the caller named them) and returns their values in order.
        When it fails and every missing key has a value past its TTL but within CACHE_STALE_IF_ERROR, those
        values are returned with `stale=True`; otherwise its exception propagates. With `failures`, a failure
        is shared with the processes waiting on the same keys (see `_singleflight.py`).
        """
        fulls = [tenant_key(self.name, school_id, k) for k in keys]
        named = dict(zip(fulls, keys, strict=True))
        unique = list(named)
        stale: Stale = {}
        found = dict(zip(unique, await self._lookup(unique, refresh=True, stale=stale), strict=True))
        missing = [f for f in unique if found[f] is None]
        if missing:
            flights = self._loop_state().flights
            try:
                results = await flights.run(missing, named, compute_many, self._ttl(ttl), failures)
            except Exception:
                if any(f not in stale for f in missing):
                    raise
                results = {f: stale[f] for f in missing}
                self.counters.stale_served += len(missing)
            found.update(results)
        return [found[f] for f in fulls]  # type: ignore[misc]

    async def stream(
        self,
        key: str,
        produce: Produce,
        assemble: Assemble,
        ttl: float | None = None,
        school_id: int | None = None,
        *,
        failures: FailureCodec | None = None,
    ) -> Lookup | StreamStart:
        """A cached value (a Lookup), or the stream that produces it, shared by every identical request in
        flight on any replica (see `_streams.py`): `produce()` yields the chunks (bytes) from the source,
        `assemble(chunks)` makes the value stored when the stream ends normally."""
        full = self._full(key, school_id)
        found = await self._lookup_one(full)
        if found is not None:
            return found
        streams = self._loop_state().streams
        return await streams.join(full, produce, assemble, self._ttl(ttl), failures)

    # ----- lifecycle, health, stats --------------------------------------------------------------------
    async def start(self) -> None:
        """Open the invalidation subscription in this loop now rather than on the first call."""
        self._loop_state()

    async def prewarm(self, *, seconds: float, max_bytes: int) -> PrewarmReport:
        """Fill the memory tier from Redis with the most recently used entries, within both budgets
        (rag_api.cache._prewarm); after `start()`, before serving."""
        if self.redis is None or not self.breaker.closed:
            return PrewarmReport(stopped="redis")
        return await prewarm_memory(self._coherent, self.redis, self.name, seconds=seconds, max_bytes=max_bytes)

    async def aclose(self) -> None:
        state, self._state = self._state, None
        if state is not None and state.loop is asyncio.get_running_loop():
            tasks = [t for t in (state.listener, *state.tasks) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._guard.aclose()
        self._stop_sync_listener()
        self._coherent.forget_subscriptions()
        if self.redis is not None:
            with contextlib.suppress(CacheBackendError):
                await self.redis.aclose()
        if self.sync_redis is not None:
            self.sync_redis.close()

    def close_sync(self) -> None:
        """Stop the sync invalidation thread and close the sync client (code that never runs a loop)."""
        self._stop_sync_listener()
        self._coherent.forget_subscriptions()
        if self.sync_redis is not None:
            self.sync_redis.close()

    async def health(self) -> dict[str, Any]:
        available = False
        if self.redis is not None and self.breaker.closed:
            try:
                available = (await self._guard.call(lambda r: r.ping())) is True
            except CacheUnavailableError:
                available = False
        return {
            "status": "ok",
            "redis_enabled": self.redis is not None,
            "redis_available": available,
            "breaker": self.breaker.state,
            "coherent": self._coherent.subscribed,
        }

    async def topology(self) -> dict[str, Any] | None:
        """The Redis topology (mode, primary, whether a failover is under way), or None without Redis. Asked
        past the breaker, within the usual budget: while the breaker is open is when it matters most."""
        if self.redis is None:
            return None
        try:
            return await self.redis.topology()
        except CacheBackendError as exc:
            mode = self.redis.options.mode
            # Sentinel and Cluster exist to replace a lost primary: an unreachable one means a failover is due.
            failover = mode != "standalone"
            return {"mode": mode, "primary": None, "primaries": [], "failover_in_progress": failover, "error": str(exc)}

    def stats(self) -> dict[str, Any]:
        c = self.counters
        lookups = c.hits + c.misses
        memory = self.memory
        return {
            "name": self.name,
            **asdict(c),
            "hit_rate": round(c.hits / lookups, 4) if lookups else 0.0,
            "evictions": memory.evictions,
            "breaker": self.breaker.state,
            "breaker_opened": self.breaker.times_opened,
            "coherent": self._coherent.subscribed,
            "memory": {
                "entries": len(memory),
                "bytes": memory.bytes_used,
                "max_entries": memory.max_entries,
                "max_bytes": memory.max_bytes,
                "evictions": memory.evictions,
                "tenant_evictions": memory.tenant_evictions,
                "tenant_share": memory.tenant_share,
                "expirations": memory.expirations,
            },
        }

    async def redis_info(self) -> dict[str, Any] | None:
        if self.redis is None or not self.breaker.closed:
            return None
        try:
            info = await self._guard.call(lambda r: r.info())
        except CacheUnavailableError:
            return None
        return None if isinstance(info, Unavailable) else info

    # ----- the synchronous API -------------------------------------------------------------------------
    def get_sync(self, key: str, school_id: int | None = None) -> Any:
        full = tenant_key(self.name, school_id, key)
        self._ensure_sync_listener()
        mem = self._coherent
        trusted = mem.trusted()
        if trusted and (found := mem.read(full)) is not None:
            return self._counted(found).value
        generation = mem.generation
        data = self._guard.call_sync(lambda r: r.get(full))
        if isinstance(data, Unavailable):
            found = None if trusted else mem.read(full)  # Redis just failed: memory is the fallback now
        else:
            found = None if data is None else mem.accept(full, data, generation)
        if found is None:
            self.counters.misses += 1
            return None
        return self._counted(found).value

    def set_sync(self, key: str, value: Any, ttl: float | None = None, school_id: int | None = None) -> None:
        full = tenant_key(self.name, school_id, key)
        self._ensure_sync_listener()
        seconds = self._ttl(ttl)
        data = encode(value, expires_at=time.time() + seconds)
        self._coherent.keep(full, data, seconds)
        self.counters.sets += 1
        notice = Notice(self.sender, keys=(full,)).encode()
        kept = seconds + self.policy.stale_if_error
        self._guard.call_sync(lambda r: r.set(full, data, kept, announce=notice))

    def delete_sync(self, key: str, school_id: int | None = None) -> bool:
        full = tenant_key(self.name, school_id, key)
        in_memory = self.memory.delete_nowait(full)
        self.counters.deletes += 1
        notice = Notice(self.sender, keys=(full,)).encode()
        removed = self._guard.call_sync(lambda r: r.delete([full], announce=notice))
        return in_memory if self._removal_local(removed) else bool(removed)

    def clear_sync(self, school_id: int | None = None) -> int:
        prefix = cache_prefix(self.name) if school_id is None else school_prefix(self.name, school_id)
        in_memory = self.memory.delete_prefix(prefix)
        notice = Notice(self.sender, prefix=prefix).encode()
        removed = self._guard.call_sync(lambda r: r.clear(prefix, announce=notice))
        return in_memory if self._removal_local(removed) else int(removed)  # type: ignore[arg-type]

    def get_or_compute_sync(
        self, key: str, compute: Callable[[], Any], ttl: float | None = None, school_id: int | None = None
    ) -> Any:
        """Single flight between threads of this process (no cross-process lease on the sync path)."""
        full = tenant_key(self.name, school_id, key)
        with self._sync_guard:
            lock = self._sync_locks.setdefault(full, threading.Lock())
        with lock:
            value = self.get_sync(key, school_id=school_id)
            if value is None:
                value = compute()
                self.counters.computes += 1
                self.set_sync(key, value, ttl=ttl, school_id=school_id)
        with self._sync_guard:
            if not lock.locked():
                self._sync_locks.pop(full, None)
        return value

    # ----- internals -----------------------------------------------------------------------------------
    def _full(self, key: str, school_id: int | None) -> str:
        """`tenant_key()`, remembered for the last few thousand (school, key) pairs: a hit's key check is a
        third of its cost. Only exact ints are remembered (True and 1.0 hash like 1 but are refused)."""
        if type(school_id) is int and (full := self._fulls.get((school_id, key))) is not None:
            return full
        full = tenant_key(self.name, school_id, key)
        if len(self._fulls) >= 4096:
            self._fulls.clear()
        self._fulls[(school_id, key)] = full
        return full

    def _removal_local(self, removed: object) -> bool:
        """True for a delete or clear that reached only this process's memory: fine without Redis, an error
        with it (unlike a lost write, a lost removal would let the removed value come back from Redis)."""
        if not isinstance(removed, Unavailable):
            return False
        if self.redis is not None or self.sync_redis is not None:
            raise CacheUnavailableError(
                f"Redis is unavailable: the {self.name} cache removed the entries from this process's memory only"
            )
        return True

    def _ttl(self, ttl: float | None) -> float:
        seconds = self.policy.default_ttl if ttl is None else ttl
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds < math.inf:
            raise InvalidKeyError(f"ttl must be a positive number of seconds, not {ttl!r}")
        if self.policy.ttl_jitter:
            seconds *= 1.0 - random.random() * self.policy.ttl_jitter
        return float(seconds)

    def _counted(self, found: Lookup) -> Lookup:
        self.counters.hits += 1
        if found.tier == "memory":
            self.counters.memory_hits += 1
        else:
            self.counters.redis_hits += 1
        return found

    async def _lookup_one(self, full: str, *, refresh: bool = False, stale: Stale | None = None) -> Lookup | None:
        """The hot path of a single key: memory, then Redis (refilling memory), then memory as the fallback."""
        mem = self._coherent
        trusted = mem.trusted()
        if trusted and (found := mem.read(full, refresh=refresh, stale=stale)) is not None:
            self.counters.hits += 1
            self.counters.memory_hits += 1
            return found
        state = self._state
        if state is None or state.loop is not asyncio.get_running_loop():
            self._loop_state()
        generation = mem.generation
        data = await self._guard.call(lambda r: r.get(full))
        if isinstance(data, Unavailable):
            found = None if trusted else mem.read(full, stale=stale)  # Redis just failed: memory is the fallback
        else:
            found = None if data is None else mem.accept(full, data, generation, refresh=refresh, stale=stale)
        if found is None:
            self.counters.misses += 1
            return None
        return self._counted(found)

    async def _lookup(
        self, fulls: list[str], *, refresh: bool = False, stale: Stale | None = None
    ) -> list[Lookup | None]:
        if len(fulls) == 1:
            return [await self._lookup_one(fulls[0], refresh=refresh, stale=stale)]
        self._loop_state()
        mem = self._coherent
        trusted = mem.trusted()
        found: list[Lookup | None] = [None] * len(fulls)
        if trusted:
            found = [mem.read(full, refresh=refresh, stale=stale) for full in fulls]
        pending = [i for i, lk in enumerate(found) if lk is None]
        if pending:
            generation = mem.generation
            datas = await self._guard.call(lambda r: r.get_many([fulls[i] for i in pending]))
            for n, i in enumerate(pending):
                if isinstance(datas, Unavailable):
                    found[i] = None if trusted else mem.read(fulls[i], stale=stale)
                elif (data := datas[n]) is not None:
                    found[i] = mem.accept(fulls[i], data, generation, refresh=refresh, stale=stale)
        for lk in found:
            if lk is None:
                self.counters.misses += 1
            else:
                self._counted(lk)
        return found

    async def _store(self, values: dict[str, Any], seconds: float, *, delta: float = 0.0, admit: bool = False) -> None:
        """Write values to memory and Redis (computed values only within their school's write budget)."""
        expires_at = time.time() + seconds
        kept = seconds + self.policy.stale_if_error  # the envelope says when it expires; the grace follows
        datas = {}
        for full, value in values.items():
            datas[full] = data = encode(value, expires_at=expires_at, delta=delta)
            self._coherent.keep(full, data, seconds)
        self.counters.sets += len(datas)
        notice = Notice(self.sender, keys=tuple(datas)).encode()
        if admit and (admitted := self._admission.admit(list(datas))) != list(datas):
            self.counters.writes_refused += len(datas) - len(admitted)
            datas = {full: datas[full] for full in admitted}
            if not datas:
                return
        await self._guard.call(lambda r: r.set_many(datas, kept, announce=notice))

    async def _store_computed(self, values: dict[str, Any], seconds: float, delta: float) -> None:
        await self._store(values, seconds, delta=delta, admit=True)

    def _loop_state(self) -> _LoopState:
        """This loop's background tasks, started on first use in each loop (FastAPI, or each asyncio.run)."""
        loop = asyncio.get_running_loop()
        state = self._state
        if state is not None and state.loop is loop:
            return state
        if state is not None:
            self._coherent.on_lost(state.subscription)  # that loop's subscription is gone with it
        seams = FlightSeams(
            loop,
            self._guard,
            self._coherent,
            self._store_computed,
            self._spawn,
            self.policy,
            self.counters,
            self.sender,
        )
        flights, streams = SingleFlight(seams), StreamFlights(seams)
        state = self._state = _LoopState(loop, flights, streams)
        if self.redis is not None:
            listener = InvalidationListener(
                self.redis, self._subscriber(state.subscription), reconnect_interval=self.policy.probe_interval
            )
            state.listener = loop.create_task(listener.run(), name=f"cache-{self.name}-invalidations")
        return state

    def _ensure_sync_listener(self) -> None:
        """A thread that holds the invalidation subscription for the sync API (started once per process)."""
        sync_redis = self.sync_redis
        if sync_redis is None:
            return
        current = self._sync_listener
        if current is not None and current[1] == os.getpid():
            return
        with self._sync_guard:
            current = self._sync_listener
            if current is not None and current[1] == os.getpid():
                return
            listener = ThreadedInvalidationListener(
                sync_redis, self._subscriber(object()), reconnect_interval=self.policy.probe_interval
            )
            self._sync_listener = (listener, os.getpid())
            listener.start()

    def _subscriber(self, subscription: object) -> Subscriber:
        """How one listener (known to CoherentMemory as `subscription`) reports to this manager."""
        mem = self._coherent
        return Subscriber(
            self.sender, mem.on_notice, partial(mem.on_subscribed, subscription), partial(mem.on_lost, subscription)
        )

    def _stop_sync_listener(self) -> None:
        current, self._sync_listener = self._sync_listener, None
        if current is not None and current[1] == os.getpid():
            current[0].stop()

    def _wake_waiters(self, fulls: tuple[str, ...]) -> None:
        """A peer wrote (or failed) these keys: wake this loop's single-flight waiters, from any thread."""
        state = self._state
        if state is None or state.loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is state.loop:
            state.flights.notify(fulls)
        else:
            state.loop.call_soon_threadsafe(state.flights.notify, fulls)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task of this loop that outlives its caller (a cancelled request must not cancel
        the computation other callers wait for), keeping a reference so it is not collected mid-flight."""
        state = self._loop_state()
        task = state.loop.create_task(coro)
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
