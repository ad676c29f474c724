"""Fixtures of the integration tests that drive several cache processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.support.workers import Worker

StartWorkers = Callable[..., list[Worker]]


@pytest.fixture
def start_workers() -> Iterator[StartWorkers]:
    """`start(redis, count=3, **env)`: `count` cache_worker processes on `redis` (a Redis URL, or a topology's
    settings), each subscribed to invalidations before it is returned; all closed after the test."""
    started: list[Worker] = []

    def start(redis: str | Mapping[str, str], count: int = 3, **env: str) -> list[Worker]:
        target = {"REDIS_URL": redis} if isinstance(redis, str) else dict(redis)
        workers = [Worker({**target, "CACHE_BREAKER_PROBE_INTERVAL": "0.1", **env}) for _ in range(count)]
        started.extend(workers)
        for worker in workers:
            worker.wait_coherent()
        return workers

    yield start
    for worker in started:
        worker.close()
