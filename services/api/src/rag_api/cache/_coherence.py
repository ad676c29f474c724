"""The read rule, in one place: when the memory tier may be trusted, when an entry answers a read, and when
a value read from Redis may refill memory. `get`, `get_many`, the single-flight claim and the sync twins all
go through `CoherentMemory`.

- Memory is trusted while at least one invalidation subscription of this process is live (async listener
  or the sync thread), or while Redis is known to be down (the breaker is open), or without Redis.
- An entry answers a read while within its TTL; past it, within CACHE_STALE_IF_ERROR, it is set aside as the
  stale answer should recomputing fail; early refresh (XFetch) may also turn it into a miss.
- A value read from Redis refills memory only if no invalidation arrived since the read began (the
  `generation` moves with every invalidation and every change of subscription).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from ._errors import CorruptValueError
from ._invalidation import Notice
from ._lookup import CacheCounters, CachePolicy, Lookup, Tier
from ._memory import MemoryTier
from ._serialization import Stored, stored_form

__all__ = ["CoherentMemory", "Stale"]

Stale = dict[str, Lookup]


class CoherentMemory:
    """One manager's memory tier with its coherence state."""

    def __init__(
        self,
        memory: MemoryTier,
        *,
        policy: CachePolicy,
        counters: CacheCounters,
        shared: bool,
        redis_down: Callable[[], bool],
    ) -> None:
        self.memory = memory
        self.policy = policy
        self.counters = counters
        self.shared = shared  # a Redis tier exists, so other processes may write
        self._redis_down = redis_down
        self.generation = 0  # moves on every invalidation; a Redis read refills memory only if it did not
        self._subscriptions: set[object] = set()
        self.on_keys: Callable[[tuple[str, ...]], None] | None = None  # wakes single-flight waiters

    @property
    def subscribed(self) -> bool:
        return bool(self._subscriptions)

    def trusted(self) -> bool:
        return not self.shared or bool(self._subscriptions) or self._redis_down()

    # ----- the read rule -------------------------------------------------------------------------------
    def fresh(self, full: str) -> Stored | None:
        """The memory entry within its TTL, or None: the plain read (no early refresh, no stale answer).
        The hot path of `get`; whether memory may be trusted now is the caller's question."""
        stored: Stored | None = self.memory.get_nowait(full)
        if stored is None or (stored.expires_at and stored.expires_at <= time.time()):
            return None
        return stored

    def read(self, full: str, *, refresh: bool = False, stale: Stale | None = None) -> Lookup | None:
        """The memory tier's answer, whether or not it may be trusted now (the caller decides)."""
        if not refresh and stale is None:
            stored = self.fresh(full)
            return None if stored is None else Lookup(stored.read(), "memory", True)
        stored = self.memory.get_nowait(full)
        if stored is None or not self._answers(full, stored, "memory", refresh, stale):
            return None
        return Lookup(stored.read(), "memory", True)

    def accept(
        self, full: str, data: bytes, generation: int, *, refresh: bool = False, stale: Stale | None = None
    ) -> Lookup | None:
        """The answer of bytes read from Redis (a corrupt value reads as a miss); refills memory."""
        try:
            stored = stored_form(data)
        except CorruptValueError:
            self.counters.corrupt += 1
            return None
        if generation == self.generation:
            self.memory.set_nowait(full, stored, self._kept_for(stored), stored.size)
        if not self._answers(full, stored, "redis", refresh, stale):
            return None
        return Lookup(stored.read(), "redis", True)

    def keep(self, full: str, data: bytes, seconds: float) -> None:
        """A value this process wrote: kept for its TTL plus the stale grace."""
        self.memory.set_nowait(full, stored := stored_form(data), seconds + self.policy.stale_if_error, stored.size)

    def _answers(self, full: str, stored: Stored, tier: Tier, refresh: bool, stale: Stale | None) -> bool:
        expires_at = stored.expires_at
        if expires_at and expires_at <= time.time():
            # Kept for fail-safe only within the grace (a peer's clock or an older setting may say otherwise).
            if stale is not None and time.time() - expires_at <= self.policy.stale_if_error:
                stale[full] = Lookup(stored.read(), tier, False, True)
            return False
        return not (refresh and self._wants_refresh(stored))

    def _kept_for(self, stored: Stored) -> float:
        if not stored.expires_at:
            return math.inf
        return stored.expires_at - time.time() + self.policy.stale_if_error

    def _wants_refresh(self, stored: Stored) -> bool:
        """XFetch: recompute a little before expiry, more likely the closer it is and the costlier the value."""
        beta = self.policy.early_refresh_beta
        if not beta or not stored.expires_at or not stored.delta:
            return False
        return time.time() - stored.delta * beta * math.log(1.0 - random.random()) >= stored.expires_at

    # ----- invalidation --------------------------------------------------------------------------------
    def on_notice(self, notice: Notice) -> None:
        self.generation += 1
        self.counters.invalidations += 1
        for full in notice.keys:
            self.memory.delete_nowait(full)
        if notice.prefix is not None:
            self.memory.delete_prefix(notice.prefix)
        if self.on_keys is not None and notice.keys:
            self.on_keys(notice.keys)

    def on_subscribed(self, subscription: object) -> None:
        # Whatever memory holds may have missed invalidations while nobody listened: drop it, then trust.
        self.generation += 1
        if not self._subscriptions:
            self.memory.clear_nowait()
        self.counters.resubscribes += 1
        self._subscriptions.add(subscription)

    def on_lost(self, subscription: object) -> None:
        self._subscriptions.discard(subscription)
        self.generation += 1

    def forget_subscriptions(self) -> None:
        self._subscriptions.clear()
        self.generation += 1
