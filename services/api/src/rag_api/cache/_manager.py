"""CacheManager: the seed's API over a memory tier and a Redis tier, with fallback, coherence and single flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

from ._breaker import CircuitBreaker
from ._errors import (
    BackendBusyError,
    BackendCommandError,
    CacheBackendError,
    CacheUnavailableError,
    CorruptValueError,
    InvalidKeyError,
)
from ._invalidation import InvalidationListener, Notice
from ._keys import cache_prefix, check_cache_name, school_prefix, tenant_key
from ._memory import MemoryTier
from ._redis import RedisTier, SyncRedisTier
from ._serialization import Entry, decode_for_memory, encode
from ._singleflight import FailureCodec, SingleFlight

log = logging.getLogger("rag_api.cache")
T = TypeVar("T")
Tier = Literal["memory", "redis", "none"]


class _Unavailable:
    """Marks a Redis call that did not happen or failed (Redis disabled, breaker open, error)."""


UNAVAILABLE = _Unavailable()


class Lookup(NamedTuple):
    """A value and where it came from: `hit` is False, tier "none", for a value this call computed; `stale`
    for a value past its TTL, served because computing it again failed (fail-safe, CACHE_STALE_IF_ERROR).

    A NamedTuple rather than a frozen dataclass: one is made per cache hit, and it is several times cheaper.
    """

    value: Any
    tier: Tier
    hit: bool
    stale: bool = False


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The knobs of one manager (see Settings for their environment names and meaning)."""

    default_ttl: float = 3600.0
    fallback_enabled: bool = True
    probe_interval: float = 0.25
    lease_ttl: float = 3.0
    lease_wait: float = 30.0
    lease_poll_interval: float = 0.05
    ttl_jitter: float = 0.0
    early_refresh_beta: float = 0.0
    breaker_failure_threshold: int = 1
    stale_if_error: float = 0.0
    failure_ttl: float = 2.0


@dataclass(slots=True)
class CacheCounters:
    hits: int = 0
    misses: int = 0
    memory_hits: int = 0
    redis_hits: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    fallbacks: int = 0
    corrupt: int = 0
    computes: int = 0
    coalesced: int = 0
    peer_hits: int = 0
    invalidations: int = 0
    resubscribes: int = 0
    stale_served: int = 0
    compute_failures: int = 0
    failures_shared: int = 0


@dataclass(slots=True)
class _LoopState:
    """What belongs to one event loop: background tasks and the in-process flights."""

    loop: asyncio.AbstractEventLoop
    listener: asyncio.Task[None] | None = None
    probe: asyncio.Task[None] | None = None
    flights: SingleFlight | None = None
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
        self.memory = memory
        self.redis = redis
        self.sync_redis = sync_redis
        self.breaker = CircuitBreaker(self.policy.breaker_failure_threshold)
        self.counters = CacheCounters()
        self.sender = uuid.uuid4().hex
        self._subscribed = False
        self._generation = 0  # moves on every invalidation; a Redis read refills memory only if it did not
        self._state: _LoopState | None = None
        self._sync_locks: dict[str, threading.Lock] = {}
        self._sync_locks_guard = threading.Lock()

    # ----- the seed's API ------------------------------------------------------------------------------
    async def get(self, key: str, school_id: int | None = None) -> Any:
        found = await self.lookup(key, school_id=school_id)
        return None if found is None else found.value

    async def set(self, key: str, value: Any, ttl: float | None = None, school_id: int | None = None) -> None:
        await self._store({tenant_key(self.name, school_id, key): value}, self._ttl(ttl))

    async def delete(self, key: str, school_id: int | None = None) -> bool:
        full = tenant_key(self.name, school_id, key)
        in_memory = self.memory.delete_nowait(full)
        self.counters.deletes += 1
        notice = Notice(self.sender, keys=(full,)).encode()
        removed = await self._redis_op(lambda r: r.delete([full], announce=notice))
        if isinstance(removed, _Unavailable):
            self._check_removal_shared()
            return in_memory
        return bool(removed)

    async def clear(self, school_id: int | None = None) -> int:
        """Remove one school's entries (or every school's of this cache) from Redis and every memory tier."""
        prefix = cache_prefix(self.name) if school_id is None else school_prefix(self.name, school_id)
        in_memory = self.memory.delete_prefix(prefix)
        notice = Notice(self.sender, prefix=prefix).encode()
        removed = await self._redis_op(lambda r: r.clear(prefix, announce=notice))
        if isinstance(removed, _Unavailable):
            self._check_removal_shared()
            return in_memory
        return int(removed)

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
        stale: dict[str, Lookup] = {}
        found = dict(zip(unique, await self._lookup(unique, refresh=True, stale=stale), strict=True))
        missing = [f for f in unique if found[f] is None]
        if missing:
            flights = self._loop_state().flights
            assert flights is not None
            try:
                results = await flights.run(missing, named, compute_many, self._ttl(ttl), failures)
            except Exception:
                if any(f not in stale for f in missing):
                    raise
                results = {f: stale[f] for f in missing}
                self.counters.stale_served += len(missing)
            found.update(results)
        return [found[f] for f in fulls]  # type: ignore[misc]

    # ----- lifecycle, health, stats --------------------------------------------------------------------
    async def start(self) -> None:
        """Open the invalidation subscription in this loop now rather than on the first call."""
        self._loop_state()

    async def aclose(self) -> None:
        state, self._state = self._state, None
        if state is not None and state.loop is asyncio.get_running_loop():
            tasks = [t for t in (state.listener, state.probe, *state.tasks) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._subscribed = False
        if self.redis is not None:
            with contextlib.suppress(CacheBackendError):
                await self.redis.aclose()
        if self.sync_redis is not None:
            self.sync_redis.close()

    async def health(self) -> dict[str, Any]:
        available = False
        if self.redis is not None and self.breaker.closed:
            try:
                available = (await self._redis_op(lambda r: r.ping())) is True
            except CacheUnavailableError:
                available = False
        return {
            "status": "ok",
            "redis_enabled": self.redis is not None,
            "redis_available": available,
            "breaker": self.breaker.state,
            "coherent": self._subscribed,
        }

    def stats(self) -> dict[str, Any]:
        c = self.counters
        lookups = c.hits + c.misses
        return {
            "name": self.name,
            **asdict(c),
            "hit_rate": round(c.hits / lookups, 4) if lookups else 0.0,
            "evictions": self.memory.evictions,
            "breaker": self.breaker.state,
            "breaker_opened": self.breaker.times_opened,
            "coherent": self._subscribed,
            "memory": {
                "entries": len(self.memory),
                "bytes": self.memory.bytes_used,
                "max_entries": self.memory.max_entries,
                "max_bytes": self.memory.max_bytes,
                "evictions": self.memory.evictions,
                "expirations": self.memory.expirations,
            },
        }

    async def redis_info(self) -> dict[str, Any] | None:
        if self.redis is None or not self.breaker.closed:
            return None
        try:
            info = await self._redis_op(lambda r: r.info())
        except CacheUnavailableError:
            return None
        return None if isinstance(info, _Unavailable) else info

    # ----- the synchronous API -------------------------------------------------------------------------
    def get_sync(self, key: str, school_id: int | None = None) -> Any:
        full = tenant_key(self.name, school_id, key)
        trusted = self._memory_trusted()
        if trusted and (entry := self._memory_entry(full)) is not None and self._fresh(entry):
            self._count_hit("memory")
            return entry.value
        generation = self._generation
        data = self._sync_op(lambda r: r.get(full))
        if isinstance(data, _Unavailable):
            entry = None if trusted else self._memory_entry(full)
            if entry is not None and self._fresh(entry):
                self._count_hit("memory")
                return entry.value
        elif data is not None and (decoded := self._decode_for_memory(data))[0] is not None:
            found, memory_data = decoded
            assert found is not None
            if self._fresh(found):
                self._refill(full, found, memory_data, generation)
                self._count_hit("redis")
                return found.value
        self.counters.misses += 1
        return None

    def set_sync(self, key: str, value: Any, ttl: float | None = None, school_id: int | None = None) -> None:
        full = tenant_key(self.name, school_id, key)
        seconds = self._ttl(ttl)
        expires_at = time.time() + seconds
        data = encode(value, expires_at=expires_at)
        kept = seconds + self.policy.stale_if_error
        self.memory.set_nowait(full, encode(value, expires_at=expires_at, compact=False), kept)
        self.counters.sets += 1
        notice = Notice(self.sender, keys=(full,)).encode()
        self._sync_op(lambda r: r.set(full, data, kept, announce=notice))

    def delete_sync(self, key: str, school_id: int | None = None) -> bool:
        full = tenant_key(self.name, school_id, key)
        in_memory = self.memory.delete_nowait(full)
        self.counters.deletes += 1
        removed = self._sync_op(lambda r: r.delete([full], announce=Notice(self.sender, keys=(full,)).encode()))
        if isinstance(removed, _Unavailable):
            self._check_removal_shared()
            return in_memory
        return bool(removed)

    def clear_sync(self, school_id: int | None = None) -> int:
        prefix = cache_prefix(self.name) if school_id is None else school_prefix(self.name, school_id)
        in_memory = self.memory.delete_prefix(prefix)
        removed = self._sync_op(lambda r: r.clear(prefix, announce=Notice(self.sender, prefix=prefix).encode()))
        if isinstance(removed, _Unavailable):
            self._check_removal_shared()
            return in_memory
        return int(removed)

    def get_or_compute_sync(
        self, key: str, compute: Callable[[], Any], ttl: float | None = None, school_id: int | None = None
    ) -> Any:
        """Single flight between threads of this process (no cross-process lease on the sync path)."""
        full = tenant_key(self.name, school_id, key)
        with self._sync_locks_guard:
            lock = self._sync_locks.setdefault(full, threading.Lock())
        with lock:
            value = self.get_sync(key, school_id=school_id)
            if value is None:
                value = compute()
                self.counters.computes += 1
                self.set_sync(key, value, ttl=ttl, school_id=school_id)
        with self._sync_locks_guard:
            if not lock.locked():
                self._sync_locks.pop(full, None)
        return value

    # ----- internals -----------------------------------------------------------------------------------
    def _check_removal_shared(self) -> None:
        """A delete or clear that reached only this process's memory: fine without Redis, an error with it.

        Unlike a lost write (a later miss), a lost removal would let the removed value come back from Redis
        once it returns, so the caller must know.
        """
        if self.redis is not None:
            raise CacheUnavailableError(
                f"Redis is unavailable: the {self.name} cache removed the entries from this process's memory only"
            )

    def _memory_trusted(self) -> bool:
        """Memory may be served while subscribed to invalidations, or while Redis is known to be down."""
        return self.redis is None or self._subscribed or not self.breaker.closed

    def _ttl(self, ttl: float | None) -> float:
        seconds = self.policy.default_ttl if ttl is None else ttl
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds < math.inf:
            raise InvalidKeyError(f"ttl must be a positive number of seconds, not {ttl!r}")
        if self.policy.ttl_jitter:
            seconds *= 1.0 - random.random() * self.policy.ttl_jitter
        return float(seconds)

    @staticmethod
    def _fresh(entry: Entry) -> bool:
        """Within its TTL; past it, an entry is kept only to be served stale when recomputing it fails."""
        return not entry.expires_at or entry.expires_at > time.time()

    def _memory_ttl(self, entry: Entry) -> float:
        """How long memory may keep an entry read from Redis: its TTL left plus the stale grace."""
        return entry.expires_at - time.time() + self.policy.stale_if_error if entry.expires_at else math.inf

    def _refill(self, full: str, entry: Entry, memory_data: bytes, generation: int) -> None:
        """Keep a value read from Redis in memory, unless an invalidation arrived since the read began."""
        if generation == self._generation:
            self.memory.set_nowait(full, memory_data, self._memory_ttl(entry))

    def _decode(self, data: bytes) -> Entry | None:
        return self._decode_for_memory(data)[0]

    def _decode_for_memory(self, data: bytes) -> tuple[Entry | None, bytes]:
        try:
            return decode_for_memory(data)
        except CorruptValueError:
            self.counters.corrupt += 1
            return None, data

    def _memory_entry(self, full: str) -> Entry | None:
        data = self.memory.get_nowait(full)
        if data is None:
            return None
        entry = self._decode(data)
        if entry is None:
            self.memory.delete_nowait(full)
        return entry

    def _count_hit(self, tier: Tier) -> None:
        self.counters.hits += 1
        if tier == "memory":
            self.counters.memory_hits += 1
        else:
            self.counters.redis_hits += 1

    def _wants_refresh(self, entry: Entry) -> bool:
        """XFetch: recompute a little before expiry, more likely the closer it is and the costlier the value."""
        beta = self.policy.early_refresh_beta
        if not beta or not entry.expires_at or not entry.delta:
            return False
        return time.time() - entry.delta * beta * math.log(1.0 - random.random()) >= entry.expires_at

    def _usable(
        self, entry: Entry | None, refresh: bool, full: str, tier: Tier, stale: dict[str, Lookup] | None
    ) -> bool:
        """Whether `entry` answers a lookup; an entry past its TTL is set aside in `stale` instead."""
        if entry is None:
            return False
        if not self._fresh(entry):
            # Kept for fail-safe only within the grace (a peer's clock or an older setting may say otherwise).
            if stale is not None and time.time() - entry.expires_at <= self.policy.stale_if_error:
                stale[full] = Lookup(entry.value, tier, False, True)
            return False
        return not (refresh and self._wants_refresh(entry))

    async def _lookup_one(
        self, full: str, *, refresh: bool = False, stale: dict[str, Lookup] | None = None
    ) -> Lookup | None:
        """The hot path of a single key: memory, then Redis (refilling memory), then memory as the fallback."""
        trusted = self._memory_trusted()
        if trusted:
            entry = self._memory_entry(full)
            if entry is not None and self._usable(entry, refresh, full, "memory", stale):
                self.counters.hits += 1
                self.counters.memory_hits += 1
                return Lookup(entry.value, "memory", True)
        self._loop_state()
        generation = self._generation
        data = await self._redis_op(lambda r: r.get(full))
        if isinstance(data, _Unavailable):
            # Redis just failed: memory is the fallback now.
            if not trusted and self._usable(entry := self._memory_entry(full), False, full, "memory", stale):
                assert entry is not None
                self.counters.hits += 1
                self.counters.memory_hits += 1
                return Lookup(entry.value, "memory", True)
        elif data is not None:
            entry, memory_data = self._decode_for_memory(data)
            if entry is not None:
                self._refill(full, entry, memory_data, generation)
            if self._usable(entry, refresh, full, "redis", stale):
                assert entry is not None
                self.counters.hits += 1
                self.counters.redis_hits += 1
                return Lookup(entry.value, "redis", True)
        self.counters.misses += 1
        return None

    async def _lookup(
        self, fulls: list[str], *, refresh: bool = False, stale: dict[str, Lookup] | None = None
    ) -> list[Lookup | None]:
        if len(fulls) == 1:
            return [await self._lookup_one(fulls[0], refresh=refresh, stale=stale)]
        self._loop_state()
        found: list[Lookup | None] = [None] * len(fulls)
        trusted = self._memory_trusted()
        if trusted:
            for i, full in enumerate(fulls):
                entry = self._memory_entry(full)
                if self._usable(entry, refresh, full, "memory", stale):
                    assert entry is not None
                    found[i] = Lookup(entry.value, "memory", True)
        pending = [i for i, lk in enumerate(found) if lk is None]
        if pending:
            generation = self._generation
            datas = await self._redis_op(lambda r: r.get_many([fulls[i] for i in pending]))
            if isinstance(datas, _Unavailable):
                if not trusted:  # Redis just failed: memory is the fallback now
                    for i in pending:
                        entry = self._memory_entry(fulls[i])
                        if self._usable(entry, False, fulls[i], "memory", stale):
                            assert entry is not None
                            found[i] = Lookup(entry.value, "memory", True)
            else:
                for i, data in zip(pending, datas, strict=True):
                    if data is None:
                        continue
                    entry, memory_data = self._decode_for_memory(data)
                    if entry is None:
                        continue
                    self._refill(fulls[i], entry, memory_data, generation)
                    if self._usable(entry, refresh, fulls[i], "redis", stale):
                        found[i] = Lookup(entry.value, "redis", True)
        for lk in found:
            if lk is None:
                self.counters.misses += 1
            else:
                self._count_hit(lk.tier)
        return found

    async def _store(self, values: dict[str, Any], seconds: float, *, delta: float = 0.0) -> None:
        expires_at = time.time() + seconds
        kept = seconds + self.policy.stale_if_error  # the envelope says when it expires; the grace follows
        datas = {}
        for full, value in values.items():
            datas[full] = data = encode(value, expires_at=expires_at, delta=delta)
            plain = data if data[1] not in b"FA" else encode(value, expires_at=expires_at, delta=delta, compact=False)
            self.memory.set_nowait(full, plain, kept)
        self.counters.sets += len(datas)
        notice = Notice(self.sender, keys=tuple(datas)).encode()
        await self._redis_op(lambda r: r.set_many(datas, kept, announce=notice))

    def _fallback(self) -> _Unavailable:
        if not self.policy.fallback_enabled:
            raise CacheUnavailableError(f"Redis is unavailable for the {self.name} cache and fallback is off")
        self.counters.fallbacks += 1
        return UNAVAILABLE

    async def _redis_op(self, op: Callable[[RedisTier], Awaitable[T]]) -> T | _Unavailable:
        if self.redis is None:
            return UNAVAILABLE
        if not self.breaker.closed:
            return self._fallback()
        try:
            result = await op(self.redis)
        except (BackendBusyError, BackendCommandError):  # Redis is busy or refused one command: not an outage
            self.counters.errors += 1
            return self._fallback()
        except CacheBackendError as exc:
            self.counters.errors += 1
            if self.breaker.record_failure():
                log.warning("%s cache: Redis failed (%s); serving from memory until it answers again", self.name, exc)
                self._start_probe()
            return self._fallback()
        self.breaker.record_success()
        return result

    def _sync_op(self, op: Callable[[SyncRedisTier], T]) -> T | _Unavailable:
        if self.sync_redis is None:
            return UNAVAILABLE
        if not self.breaker.closed:
            # Code without a running loop has no background probe: it tries Redis itself, at most once per
            # probe interval, and closes the breaker when Redis answers.
            if self.breaker.open_for() < self.policy.probe_interval:
                return self._fallback()
            try:
                self.sync_redis.ping()
            except CacheBackendError:
                self.breaker.opened_at = time.monotonic()
                return self._fallback()
            self.breaker.close()
        try:
            result = op(self.sync_redis)
        except CacheBackendError as exc:
            self.counters.errors += 1
            outage = not isinstance(exc, BackendBusyError | BackendCommandError)
            if outage and self.breaker.record_failure():
                log.warning("%s cache: Redis failed (%s); serving from memory", self.name, exc)
            return self._fallback()
        self.breaker.record_success()
        return result

    def _loop_state(self) -> _LoopState:
        """This loop's background tasks, started on first use in each loop (FastAPI, or each asyncio.run)."""
        loop = asyncio.get_running_loop()
        state = self._state
        if state is not None and state.loop is loop:
            return state
        self._subscribed = False
        state = self._state = _LoopState(loop)
        state.flights = SingleFlight(self, loop)
        if self.redis is not None:
            listener = InvalidationListener(
                self.redis,
                sender=self.sender,
                on_notice=self._on_notice,
                on_subscribed=self._on_subscribed,
                on_lost=self._on_lost,
                reconnect_interval=self.policy.probe_interval,
            )
            state.listener = loop.create_task(listener.run(), name=f"cache-{self.name}-invalidations")
        return state

    def _start_probe(self) -> None:
        state = self._loop_state()
        if state.probe is None or state.probe.done():
            state.probe = state.loop.create_task(self._probe(), name=f"cache-{self.name}-probe")

    async def _probe(self) -> None:
        assert self.redis is not None
        with contextlib.suppress(CacheBackendError):
            await self.redis.reset_connections()
        while not self.breaker.closed:
            await asyncio.sleep(self.policy.probe_interval)
            try:
                await self.redis.ping()
            except CacheBackendError:
                continue
            self.breaker.close()
            log.warning("%s cache: Redis answers again; breaker closed", self.name)

    def _on_subscribed(self) -> None:
        # Whatever memory holds may have missed invalidations while nobody listened: drop it, then trust.
        self._generation += 1
        self.memory.clear_nowait()
        self.counters.resubscribes += 1
        self._subscribed = True

    def _on_lost(self) -> None:
        self._subscribed = False
        self._generation += 1

    def _on_notice(self, notice: Notice) -> None:
        self._generation += 1
        self.counters.invalidations += 1
        for full in notice.keys:
            self.memory.delete_nowait(full)
        if notice.prefix is not None:
            self.memory.delete_prefix(notice.prefix)
        state = self._state
        if state is not None and state.flights is not None:
            state.flights.notify(notice.keys)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task of this loop that outlives its caller (a cancelled request must not cancel
        the computation other callers wait for), keeping a reference so it is not collected mid-flight."""
        state = self._loop_state()
        task = state.loop.create_task(coro)
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
