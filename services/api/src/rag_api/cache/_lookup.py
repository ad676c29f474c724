"""What a lookup answers and what a manager counts; shared by the manager, the read rule and single flight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = ["UNAVAILABLE", "CacheCounters", "CachePolicy", "Lookup", "Tier", "Unavailable"]

Tier = Literal["memory", "redis", "none"]


class Lookup(NamedTuple):
    """A value and where it came from: `hit` is False, tier "none", for a value this call computed; `stale`
    for a value past its TTL, served because computing it again failed (fail-safe, CACHE_STALE_IF_ERROR).

    A NamedTuple rather than a frozen dataclass: one is made per cache hit, and it is several times cheaper.
    """

    value: Any
    tier: Tier
    hit: bool
    stale: bool = False


class Unavailable:
    """Marks a Redis call that did not happen or failed (Redis disabled, breaker open, error)."""


UNAVAILABLE = Unavailable()


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
    tenant_write_rate: float = 0.0  # Redis writes per second per school and process; 0 = unlimited
    tenant_write_burst: float = 0.0
    stream_poll_interval: float = 0.01  # how often a replica polls another replica's shared stream
    stream_max_seconds: float = 600.0  # how long a flowing stream may last in all


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
    writes_refused: int = 0
