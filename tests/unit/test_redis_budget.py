"""The per-operation time budget of the Redis tier."""

from __future__ import annotations

import asyncio
import time

import pytest
from rag_api.cache import CacheBackendError, RedisOptions, RedisTier


class SlowClient:
    """Answers GET after `delay` seconds, like a frozen Redis would never."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def get(self, key: str) -> bytes:
        await asyncio.sleep(self.delay)
        return b"late"


def tier_with(client: SlowClient, budget: float) -> RedisTier:
    return RedisTier(RedisOptions(url="redis://x", socket_timeout=budget), channel="c", factory=lambda: client)  # type: ignore[arg-type, return-value]


async def test_an_operation_past_its_budget_fails_as_a_backend_error() -> None:
    """A GET slower than the budget raises CacheBackendError within the budget plus one check period."""
    tier = tier_with(SlowClient(5.0), budget=0.05)
    started = time.monotonic()
    with pytest.raises(CacheBackendError, match="did not answer"):
        await tier.get("k")
    assert time.monotonic() - started < 0.05 * 1.2 + 0.05


async def test_the_task_goes_on_normally_after_a_budget_error() -> None:
    """After the budget cancelled an operation, the calling task is not left cancelled."""
    tier = tier_with(SlowClient(5.0), budget=0.05)
    with pytest.raises(CacheBackendError):
        await tier.get("k")
    await asyncio.sleep(0.01)  # would raise CancelledError if a cancellation were still pending
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_operations_within_budget_are_untouched() -> None:
    """Fast operations complete, concurrently, with their values."""
    tier = tier_with(SlowClient(0.01), budget=0.5)
    assert await asyncio.gather(*(tier.get(f"k{i}") for i in range(20))) == [b"late"] * 20


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    """A caller cancelled for its own reasons sees CancelledError, not a budget error."""
    tier = tier_with(SlowClient(5.0), budget=1.0)
    task = asyncio.create_task(tier.get("k"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
