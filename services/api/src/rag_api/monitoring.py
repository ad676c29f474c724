"""What the dashboard reads beyond the per-request metrics: bounded school and model labels, token costs, and
the cache and Redis figures each worker exports every METRICS_INTERVAL.

The cache counters are plain integers on the hit path (no metric call per hit); `CacheExporter` turns their
growth into Prometheus counters in the background, so a hit costs nothing more for being graphed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from rag_api.cache import CacheManager
from rag_api.metrics import (
    CACHE_BREAKER,
    CACHE_EVENTS,
    CACHE_MEMORY,
    MODEL_COST,
    MODEL_TOKENS,
    REDIS_INFO,
    REDIS_UP,
    child,
)

__all__ = ["OTHER", "CacheExporter", "Costing", "ModelPrices", "SchoolLabels"]

log = logging.getLogger("rag_api.monitoring")
OTHER = "other"
# Redis INFO fields worth a series (figures of the shared server; the dashboard takes the max over replicas).
REDIS_FIELDS = ("used_memory", "maxmemory", "evicted_keys", "connected_clients", "keyspace_hits", "keyspace_misses")


class SchoolLabels:
    """A school's metric label: its id for at most `limit` schools (the tenants of TENANT_API_KEYS, lowest
    ids first, the same on every replica), "other" for the rest, so the series count stays bounded however
    many schools an admin names."""

    def __init__(self, limit: int, schools: Iterable[int] = ()) -> None:
        self.limit = limit
        self._labels: dict[int, str] = {}
        self.use(schools)

    def use(self, schools: Iterable[int]) -> None:
        """Label these schools (the key ring's, known once the app starts)."""
        self._labels = {school: str(school) for school in sorted(set(schools))[: self.limit]}

    def __call__(self, school: int) -> str:
        return self._labels.get(school, OTHER)


class ModelPrices:
    """Tokens and their price per model; a model without a price (MODEL_PRICES) counts under "other", so
    model names, which clients choose, never become labels."""

    def __init__(self, per_million: Mapping[str, float]) -> None:
        self._per_token = {model: price / 1_000_000 for model, price in per_million.items()}

    def count(self, model: str, source: str, tokens: int) -> None:
        """Count `tokens` served by `source` ("upstream": paid for; "cache": saved)."""
        if tokens <= 0:
            return
        price = self._per_token.get(model)
        label = model if price is not None else OTHER
        child(MODEL_TOKENS, label, source).inc(tokens)
        if price:
            child(MODEL_COST, label, source).inc(tokens * price)


@dataclass(frozen=True, slots=True)
class Costing:
    """What one request's answers cost: its model, the prices, and the tokens of one (route key, value)."""

    prices: ModelPrices
    model: str
    tokens: Callable[[str, Any], int]

    def count(self, source: str, answers: Iterable[tuple[str, Any]]) -> None:
        self.prices.count(self.model, source, sum(self.tokens(key, value) for key, value in answers))


class CacheExporter:
    """Every `interval` seconds: the growth of each manager's counters, its memory tier and breaker, and the
    Redis server's INFO figures, into this worker's metrics."""

    def __init__(self, caches: Iterable[CacheManager], interval: float) -> None:
        self.caches = tuple(caches)
        self.interval = interval
        self._seen: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(self._stop), name="metrics-exporter")

    async def aclose(self) -> None:
        # A stop signal rather than only cancel(): a cancellation that lands inside a Redis call may be taken
        # for that call's own timeout there (cache/_budget.py) and end as an error the loop goes on after.
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(task, timeout=max(1.0, self.interval))
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.export()
            except Exception:  # a figure missing for one interval must not end the exporter
                log.exception("exporting cache metrics failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    def _add(self, cache: str, event: str, value: int) -> None:
        # Every series exists from the first export (at 0), so a rate of something that never happened is 0,
        # not "no data".
        key = (cache, event)
        seen = self._seen.get(key)
        grown = value - (seen or 0)
        if seen is None or grown > 0:
            child(CACHE_EVENTS, cache, event).inc(max(grown, 0))
        self._seen[key] = value

    async def export(self) -> None:
        for cache in self.caches:
            for event, value in asdict(cache.counters).items():
                self._add(cache.name, event, value)
            memory = cache.memory
            self._add(cache.name, "memory_evictions", memory.evictions)
            self._add(cache.name, "memory_expirations", memory.expirations)
            CACHE_MEMORY.labels(cache.name, "entries").set(len(memory))
            CACHE_MEMORY.labels(cache.name, "bytes").set(memory.bytes_used)
            CACHE_BREAKER.labels(cache.name).set(0 if cache.breaker.closed else 1)
        if self.caches and self.caches[0].redis is not None:
            info = await self.caches[0].redis_info()
            REDIS_UP.set(0 if info is None else 1)
            for name in REDIS_FIELDS:
                if info is not None and isinstance(value := info.get(name), int | float):
                    REDIS_INFO.labels(name).set(value)
