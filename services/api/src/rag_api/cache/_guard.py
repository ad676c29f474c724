"""The guard every Redis call of a manager passes: the circuit breaker, the memory fallback, and the probe
that closes the breaker again.

The async and the sync entry points make the same decisions and differ only in I/O. Recovery never depends
on a task of an event loop that may be gone: an async call that finds the breaker open makes sure a probe
runs in *its* loop (starting one when the last probe belonged to a loop that `asyncio.run()` has closed),
and a sync call probes inline, at most once per probe interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._breaker import CircuitBreaker
from ._errors import BackendBusyError, BackendCommandError, CacheBackendError, CacheUnavailableError
from ._lookup import UNAVAILABLE, CacheCounters, CachePolicy, Unavailable
from ._redis import RedisTier, SyncRedisTier

__all__ = ["RedisGuard"]

log = logging.getLogger("rag_api.cache")
T = TypeVar("T")


class RedisGuard:
    """Calls Redis for one manager, or answers UNAVAILABLE (raising instead when the fallback is off)."""

    def __init__(
        self,
        name: str,
        *,
        redis: RedisTier | None,
        sync_redis: SyncRedisTier | None,
        policy: CachePolicy,
        counters: CacheCounters,
    ) -> None:
        self.name = name
        self.redis = redis
        self.sync_redis = sync_redis
        self.policy = policy
        self.counters = counters
        self.breaker = CircuitBreaker(policy.breaker_failure_threshold)
        self._probe: asyncio.Task[None] | None = None
        self._probe_loop: asyncio.AbstractEventLoop | None = None
        self._sync_probed_at = 0.0

    async def call(self, op: Callable[[RedisTier], Awaitable[T]]) -> T | Unavailable:
        if self.redis is None:
            return UNAVAILABLE
        if not self.breaker.closed:
            self._ensure_probe()
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
                self._ensure_probe()
            return self._fallback()
        self.breaker.record_success()
        return result

    def call_sync(self, op: Callable[[SyncRedisTier], T]) -> T | Unavailable:
        if self.sync_redis is None:
            return UNAVAILABLE
        if not self.breaker.closed and not self._probe_sync():
            return self._fallback()
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

    async def aclose(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None and self._probe_loop is asyncio.get_running_loop():
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    def _fallback(self) -> Unavailable:
        if not self.policy.fallback_enabled:
            raise CacheUnavailableError(f"Redis is unavailable for the {self.name} cache and fallback is off")
        self.counters.fallbacks += 1
        return UNAVAILABLE

    def _ensure_probe(self) -> None:
        """A probe running in this loop; one of a closed loop's will never run again."""
        loop = asyncio.get_running_loop()
        probe = self._probe
        if probe is not None and self._probe_loop is loop and not probe.done():
            return
        self._probe_loop = loop
        self._probe = loop.create_task(self._run_probe(), name=f"cache-{self.name}-probe")

    async def _run_probe(self) -> None:
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

    def _probe_sync(self) -> bool:
        """Code without a running loop has no background probe: it tries Redis itself, at most once per
        probe interval, and closes the breaker when Redis answers. True when the breaker is closed now."""
        assert self.sync_redis is not None
        now = time.monotonic()
        if now - max(self._sync_probed_at, self.breaker.opened_at) < self.policy.probe_interval:
            return False
        self._sync_probed_at = now
        try:
            self.sync_redis.ping()
        except CacheBackendError:
            return False
        self.breaker.close()
        return True
