"""Prewarm: a starting manager fills its memory tier from Redis, within its entry, byte and time budgets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import fakeredis
import pytest
from rag_api.cache import CacheManager, CachePolicy, MemoryTier, RedisOptions, RedisTier

MakeManager = Callable[..., CacheManager]


@pytest.fixture
async def make_manager() -> AsyncIterator[MakeManager]:
    server = fakeredis.FakeServer()
    made: list[CacheManager] = []

    def make(max_entries: int = 1000) -> CacheManager:
        manager = CacheManager(
            "embedding",
            memory=MemoryTier(max_entries=max_entries, max_bytes=10**7),
            redis=RedisTier(
                RedisOptions(url="redis://fake"), channel="inv", factory=lambda: fakeredis.FakeAsyncRedis(server=server)
            ),
            policy=CachePolicy(probe_interval=0.02),
        )
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.aclose()


async def test_a_new_manager_answers_from_memory_after_prewarm(make_manager: MakeManager) -> None:
    """Entries another process wrote are in memory after prewarm, so the first reads are memory hits."""
    writer = make_manager()
    for i in range(50):
        await writer.set(f"k{i}", f"v{i}", ttl=600, school_id=1 + i % 3)
    reader = make_manager()
    await reader.start()
    report = await reader.prewarm(seconds=5, max_bytes=10**6)
    assert (report.loaded, report.stopped) == (50, "done")
    assert len(reader.memory) == 50
    found = await reader.lookup("k7", school_id=2)
    assert found is not None
    assert found.tier == "memory"


async def test_prewarm_stops_at_its_budgets(make_manager: MakeManager) -> None:
    """The byte budget and the memory tier's entry bound both end the prewarm early."""
    writer = make_manager()
    for i in range(40):
        await writer.set(f"k{i}", "x" * 100, ttl=600, school_id=1)
    by_bytes = make_manager()
    await by_bytes.start()
    report = await by_bytes.prewarm(seconds=5, max_bytes=1000)
    assert report.stopped == "bytes"
    assert 0 < report.bytes <= 1000
    by_entries = make_manager(max_entries=10)
    await by_entries.start()
    assert (await by_entries.prewarm(seconds=5, max_bytes=10**6)).stopped == "entries"
    assert len(by_entries.memory) <= 10


async def test_prewarm_without_redis_does_nothing() -> None:
    """A manager without Redis reports that and loads nothing."""
    manager = CacheManager("llm", memory=MemoryTier(max_entries=10, max_bytes=10**6))
    assert (await manager.prewarm(seconds=1, max_bytes=100)).stopped == "redis"
