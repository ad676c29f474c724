"""CacheManager on the memory tier and fakeredis: tiers, isolation, fallback and single flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import fakeredis
import pytest
from rag_api.cache import (
    CacheManager,
    CachePolicy,
    CacheUnavailableError,
    MemoryTier,
    RedisOptions,
    RedisTier,
    SyncRedisTier,
    tenant_key,
)

from tests.support.wait import wait_until_async

MakeManager = Callable[..., CacheManager]


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def make_manager(server: fakeredis.FakeServer) -> AsyncIterator[MakeManager]:
    made: list[CacheManager] = []

    def make(*, fallback: bool = True, max_entries: int = 1000, **policy: float) -> CacheManager:
        options = RedisOptions(url="redis://fake")
        manager = CacheManager(
            "embedding",
            memory=MemoryTier(max_entries=max_entries, max_bytes=10**7),
            redis=RedisTier(options, channel="inv", factory=lambda: fakeredis.FakeAsyncRedis(server=server)),
            sync_redis=SyncRedisTier(options, channel="inv", factory=lambda: fakeredis.FakeRedis(server=server)),
            policy=CachePolicy(fallback_enabled=fallback, probe_interval=0.02, **policy),
        )
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.aclose()


async def subscribed(*managers: CacheManager) -> None:
    for manager in managers:
        await manager.start()
    await wait_until_async(
        lambda: asyncio.sleep(0, all(m.stats()["coherent"] for m in managers)), timeout=5, what="subscribed"
    )


async def test_a_redis_hit_refills_memory(make_manager: MakeManager) -> None:
    """A value written by one manager is a Redis hit for another, then a memory hit."""
    a, b = make_manager(), make_manager()
    await subscribed(a, b)
    await a.set("k", [0.5, 0.25], school_id=1)
    first = await b.lookup("k", school_id=1)
    assert first is not None
    assert first.tier == "redis"
    assert first.value == [0.5, 0.25]
    found = await b.lookup("k", school_id=1)
    assert found is not None
    assert found.tier == "memory"
    assert found.value == [0.5, 0.25]


async def test_a_replaced_value_is_not_served_stale_from_memory(make_manager: MakeManager) -> None:
    """After another manager replaces a value, this manager's memory copy is dropped and the new value read."""
    a, b = make_manager(), make_manager()
    await subscribed(a, b)
    await a.set("k", "old", school_id=1)
    assert await b.get("k", school_id=1) == "old"
    await a.set("k", "new", school_id=1)
    await wait_until_async(lambda: b.get("k", school_id=1), timeout=1)
    assert await b.get("k", school_id=1) == "new"


async def test_tenants_do_not_see_each_other(make_manager: MakeManager) -> None:
    """The same key under two schools holds two values, and clearing one school leaves the other."""
    cache = make_manager()
    for key in ["k", "*", "school:456:x", "x" * 500, "ключ"]:
        await cache.set(key, "for-123", school_id=123)
        await cache.set(key, "for-456", school_id=456)
    await cache.clear(school_id=123)
    for key in ["k", "*", "school:456:x", "x" * 500, "ключ"]:
        assert await cache.get(key, school_id=123) is None
        assert await cache.get(key, school_id=456) == "for-456"


async def test_corrupt_bytes_in_redis_read_as_a_miss(make_manager: MakeManager, server: fakeredis.FakeServer) -> None:
    """A foreign value under one of our keys is a miss, never an exception."""
    cache = make_manager()
    fakeredis.FakeRedis(server=server).set(tenant_key("embedding", 1, "k"), b"not an envelope")
    assert await cache.lookup("k", school_id=1) is None
    assert cache.stats()["corrupt"] == 1


async def test_redis_down_falls_back_to_memory_without_errors(
    make_manager: MakeManager, server: fakeredis.FakeServer
) -> None:
    """With Redis gone, reads and writes go on in memory, and the breaker stops further Redis calls."""
    cache = make_manager()
    await cache.set("before", 1, school_id=1)
    server.connected = False
    assert await cache.get("before", school_id=1) == 1
    await cache.set("during", 2, school_id=1)
    assert await cache.get("during", school_id=1) == 2
    stats = cache.stats()
    assert stats["breaker"] == "open"
    assert stats["errors"] >= 1
    assert stats["fallbacks"] >= 1
    assert (await cache.health())["redis_available"] is False
    server.connected = True
    await wait_until_async(lambda: asyncio.sleep(0, cache.breaker.closed), timeout=2, what="breaker closes")


async def test_fallback_off_raises_cache_unavailable(make_manager: MakeManager, server: fakeredis.FakeServer) -> None:
    """With CACHE_FALLBACK_ENABLED off, a dead Redis is an error the API can turn into a 503."""
    cache = make_manager(fallback=False)
    server.connected = False
    with pytest.raises(CacheUnavailableError):
        await cache.get("k", school_id=1)


async def test_concurrent_cold_calls_compute_once(make_manager: MakeManager) -> None:
    """100 concurrent get_or_compute calls for one cold key run compute once and all get its value."""
    cache = make_manager()
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "v"

    results = await asyncio.gather(*(cache.get_or_compute("cold", compute, school_id=1) for _ in range(100)))
    assert calls == 1
    assert set(results) == {"v"}


async def test_a_compute_error_reaches_every_caller_and_is_not_cached(make_manager: MakeManager) -> None:
    """When compute fails, all waiting callers see the error and the next call computes again."""
    cache = make_manager()

    async def boom() -> str:
        await asyncio.sleep(0.01)
        raise RuntimeError("upstream down")

    results = await asyncio.gather(
        *(cache.get_or_compute("k", boom, school_id=1) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)

    async def ok() -> str:
        return "fine"

    assert await cache.get_or_compute("k", ok, school_id=1) == "fine"


async def test_resolve_many_computes_only_the_misses_in_one_call(make_manager: MakeManager) -> None:
    """A batch with hits, misses and duplicates computes each miss once, in one call, and keeps the order."""
    cache = make_manager()
    await cache.set_many({"a": "A", "c": "C"}, school_id=1)
    seen: list[list[str]] = []

    async def compute_many(keys: list[str]) -> list[str]:
        seen.append(keys)
        return [k.upper() for k in keys]

    found = await cache.resolve_many(["a", "b", "c", "b", "d"], compute_many, school_id=1)
    assert [f.value for f in found] == ["A", "B", "C", "B", "D"]
    assert [f.hit for f in found] == [True, False, True, False, False]
    assert seen == [["b", "d"]]


async def test_sync_api_shares_the_tiers(make_manager: MakeManager) -> None:
    """set_sync and get_sync see what the async API wrote, and the other way round."""
    cache = make_manager()
    await cache.set("a", {"x": 1}, school_id=7)
    assert await asyncio.to_thread(cache.get_sync, "a", school_id=7) == {"x": 1}
    await asyncio.to_thread(cache.set_sync, "b", [0.5], 60, 7)
    assert await cache.get("b", school_id=7) == [0.5]
    assert cache.get_or_compute_sync("c", lambda: "computed", school_id=7) == "computed"
    assert cache.get_or_compute_sync("c", lambda: "again", school_id=7) == "computed"
    assert cache.delete_sync("c", school_id=7) is True
    assert cache.clear_sync(school_id=7) == 2


async def test_early_refresh_recomputes_before_expiry(make_manager: MakeManager) -> None:
    """With XFetch on and a value about to expire, resolve recomputes rather than serving it."""
    cache = make_manager(early_refresh_beta=1e9)
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    assert await cache.get_or_compute("k", compute, ttl=60, school_id=1) == 1
    assert await cache.get_or_compute("k", compute, ttl=60, school_id=1) == 2


async def test_memory_is_not_trusted_while_the_subscription_is_down(
    make_manager: MakeManager, server: fakeredis.FakeServer
) -> None:
    """Without a live invalidation subscription and with Redis up, reads go to Redis, not to possibly stale memory."""
    cache = make_manager()
    await subscribed(cache)
    await cache.set("k", "old", school_id=1)
    cache._coherent.forget_subscriptions()  # as if the subscription dropped: a peer's change could go unheard
    from rag_api.cache._serialization import encode

    fakeredis.FakeRedis(server=server).set(tenant_key("embedding", 1, "k"), encode("new"))
    found = await cache.lookup("k", school_id=1)
    assert found is not None
    assert (found.value, found.tier) == ("new", "redis")


async def test_removals_that_cannot_reach_redis_raise(make_manager: MakeManager, server: fakeredis.FakeServer) -> None:
    """delete and clear with Redis down empty memory but raise, since Redis would bring the value back."""
    cache = make_manager()
    await cache.set("k", "v", school_id=1)
    server.connected = False
    with pytest.raises(CacheUnavailableError):
        await cache.delete("k", school_id=1)
    with pytest.raises(CacheUnavailableError):
        await cache.clear(school_id=1)
    with pytest.raises(CacheUnavailableError):
        cache.clear_sync(school_id=1)
    assert len(cache.memory) == 0


async def test_memory_only_manager_needs_no_redis() -> None:
    """With Redis disabled, the manager is a plain memory cache: no fallbacks counted, removals succeed."""
    cache = CacheManager("llm", memory=MemoryTier(max_entries=10, max_bytes=10**6))
    await cache.set("k", "v", school_id=1)
    assert await cache.get("k", school_id=1) == "v"
    assert await cache.delete("k", school_id=1) is True
    assert await cache.clear() == 0
    assert cache.stats()["fallbacks"] == 0
    assert (await cache.health())["redis_available"] is False


async def test_an_error_reply_is_not_an_outage(make_manager: MakeManager, server: fakeredis.FakeServer) -> None:
    """Redis refusing one command (an error reply) is counted but leaves the breaker closed."""
    cache = make_manager()
    fakeredis.FakeRedis(server=server).lpush(tenant_key("embedding", 1, "k"), b"a list, not a string")
    assert await cache.get("k", school_id=1) is None
    assert cache.stats()["errors"] == 1
    assert cache.breaker.closed
