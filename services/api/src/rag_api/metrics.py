"""Prometheus metrics; with PROMETHEUS_MULTIPROC_DIR set (gunicorn), `/metrics` sums every worker's files."""

from __future__ import annotations

import os
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = [
    "CACHE_EVENTS",
    "CACHE_RESULTS",
    "CONTENT_TYPE_LATEST",
    "EMBEDDING_ITEMS",
    "CACHE_BREAKER",
    "CACHE_MEMORY",
    "HTTP_DURATION",
    "HTTP_REQUESTS",
    "MODEL_COST",
    "MODEL_TOKENS",
    "SCHOOL_REQUESTS",
    "REDIS_INFO",
    "REDIS_UP",
    "UPSTREAM_BREAKER",
    "UPSTREAM_DURATION",
    "UPSTREAM_REQUESTS",
    "child",
    "render",
]

M = TypeVar("M", Counter, Histogram)
_MAX_CHILDREN = 4096
_children: dict[tuple[object, tuple[str, ...]], object] = {}

HTTP_REQUESTS = Counter("rag_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    "rag_http_request_duration_seconds",
    "Time to answer an HTTP request, by route and X-Cache value ('none' for routes that are not cached)",
    ["route", "cache"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CACHE_RESULTS = Counter("rag_cache_results_total", "Cached-route answers by X-Cache value", ["route", "result"])
EMBEDDING_ITEMS = Counter("rag_embedding_items_total", "Embedding inputs served, by cache outcome", ["outcome"])
UPSTREAM_REQUESTS = Counter("rag_upstream_requests_total", "Calls to the model upstream", ["operation", "outcome"])
UPSTREAM_BREAKER = Gauge(
    "rag_upstream_breaker_state",
    "The model's circuit breaker in this process: 0 closed, 1 half-open, 2 open (see rag_api.model_breaker)",
    ["model"],
    multiprocess_mode="livemax",
)
# Per-school traffic for top-talker panels; `school` is bounded by rag_api.monitoring.SchoolLabels.
SCHOOL_REQUESTS = Counter(
    "rag_school_requests_total", "Data requests by school (bounded, see SchoolLabels) and X-Cache", ["school", "cache"]
)
# A CacheManager's own counters (CacheCounters field names as `event`), exported by rag_api.monitoring.
CACHE_EVENTS = Counter("rag_cache_events_total", "Cache manager counters by cache and event", ["cache", "event"])
# Tokens the model served (`source="upstream"`) or the cache saved (`source="cache"`), and their price
# (MODEL_PRICES); `model` is a priced model's name or "other".
MODEL_TOKENS = Counter("rag_model_tokens_total", "Tokens by model and source (upstream, cache)", ["model", "source"])
MODEL_COST = Counter("rag_model_cost_usd_total", "Their cost at MODEL_PRICES, US dollars", ["model", "source"])
# Sampled every METRICS_INTERVAL by each worker (rag_api.monitoring.CacheExporter).
CACHE_MEMORY = Gauge(
    "rag_cache_memory",
    "Memory tier size by cache and unit (entries, bytes)",
    ["cache", "unit"],
    multiprocess_mode="livesum",
)
CACHE_BREAKER = Gauge(
    "rag_cache_breaker_open",
    "The Redis circuit breaker of a cache: 1 open, 0 closed",
    ["cache"],
    multiprocess_mode="livemax",
)
REDIS_UP = Gauge("rag_redis_up", "1 when this replica's last Redis INFO answered, else 0", multiprocess_mode="livemin")
REDIS_INFO = Gauge(
    "rag_redis_info",
    "Redis INFO figures as this replica last read them (used_memory, maxmemory, evicted_keys, connected_clients...)",
    ["field"],
    multiprocess_mode="livemax",
)
UPSTREAM_DURATION = Histogram(
    "rag_upstream_duration_seconds",
    "Time the model upstream took",
    ["operation"],
    buckets=(0.01, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def child(metric: M, *labels: str) -> M:
    """`metric.labels(*labels)`, remembered: `labels()` validates and locks on every call, a dict lookup does not."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = metric.labels(*labels)
        if len(_children) < _MAX_CHILDREN:  # label values clients choose (the method) must not grow this forever
            _children[key] = found
    return found  # type: ignore[return-value]


def render() -> bytes:
    """The exposition text: every worker's figures in multiprocess mode, else this process's registry."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
