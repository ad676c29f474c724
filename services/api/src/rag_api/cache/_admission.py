"""Redis write admission per school: a token bucket per school and process (CACHE_TENANT_WRITE_RATE entries
per second, bursts up to CACHE_TENANT_WRITE_BURST). A computed value past its school's budget is answered and
kept in this process's memory, but not written to Redis, so a school that floods unique inputs cannot push
another school's hot entries out of Redis (allkeys-lru). The budget is per process: N replicas admit N times
the rate in all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ._memory import tenant_of

__all__ = ["WriteAdmission"]

_MAX_SCHOOLS = 10_000


class WriteAdmission:
    """`admit(keys)` answers the keys the school's bucket has room for now (rate 0: every key)."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, rate)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # school -> (tokens, when counted)
        self._lock = threading.Lock()

    def admit(self, keys: Sequence[str]) -> list[str]:
        if self.rate <= 0:
            return list(keys)
        now = self._clock()
        admitted: list[str] = []
        with self._lock:
            if len(self._buckets) > _MAX_SCHOOLS:  # full buckets carry no information: forget them
                self._buckets = {s: b for s, b in self._buckets.items() if self._tokens(b, now) < self.burst}
            for key in keys:
                school = tenant_of(key)
                tokens = self._tokens(self._buckets.get(school, (self.burst, now)), now)
                if tokens >= 1:
                    admitted.append(key)
                    tokens -= 1
                self._buckets[school] = (tokens, now)
        return admitted

    def _tokens(self, bucket: tuple[float, float], now: float) -> float:
        tokens, then = bucket
        return min(self.burst, tokens + (now - then) * self.rate)
