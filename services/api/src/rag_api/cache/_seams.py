"""What single flight and shared streams use of their manager, in one object: the Redis guard, the read rule,
the store of computed values, task spawning, and the per-key lease (claim, renew, release)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from ._coherence import CoherentMemory
from ._errors import CacheUnavailableError
from ._guard import RedisGuard
from ._keys import failure_key, lease_key
from ._lookup import CacheCounters, CachePolicy, Unavailable
from ._redis import Claim

__all__ = ["FlightSeams", "Spawn", "Store"]

Store = Callable[[dict[str, Any], float, float], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass(frozen=True, slots=True)
class FlightSeams:
    loop: asyncio.AbstractEventLoop
    guard: RedisGuard
    coherent: CoherentMemory
    store: Store
    spawn: Spawn
    policy: CachePolicy
    counters: CacheCounters
    sender: str

    async def claim(self, fulls: Sequence[str], token: str) -> list[Claim] | Unavailable:
        """Try each key's lease and read its value and any recorded failure, in one round trip."""
        leases, failed = [lease_key(f) for f in fulls], [failure_key(f) for f in fulls]
        ttl = self.policy.lease_ttl
        return await self.guard.call(lambda r: r.claim(fulls, leases, failed, token, ttl))

    async def renew(self, fulls: Sequence[str], token: str) -> None:
        """Keep the leases this token holds alive, every third of their TTL, until cancelled."""
        ttl = self.policy.lease_ttl
        leases = [lease_key(f) for f in fulls]
        while True:
            await asyncio.sleep(ttl / 3)
            with contextlib.suppress(CacheUnavailableError):
                await self.guard.call(lambda r: r.extend_leases(leases, token, ttl))

    async def release(self, fulls: Sequence[str], token: str) -> None:
        leases = [lease_key(f) for f in fulls]
        with contextlib.suppress(CacheUnavailableError):
            await self.guard.call(lambda r: r.release_leases(leases, token))
