"""CacheManager on a real redis-server: isolation, Redis dying, freezing and coming back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from rag_api.cache import CacheManager, build_cache
from rag_api.config import Settings

from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.integration
HOSTILE_KEYS = ["*", ":", "school:456:x", "x" * 5000, "ключ-鍵", "a*b?c[d]", "\\", "k\r\nFLUSHALL"]
MakeCache = Callable[..., CacheManager]


@pytest.fixture
async def make_cache() -> AsyncIterator[MakeCache]:
    made: list[CacheManager] = []

    def make(url: str, **overrides: object) -> CacheManager:
        settings = Settings(redis_url=url, cache_breaker_probe_interval=0.1, _env_file=None, **overrides)  # type: ignore[call-arg]
        cache = build_cache("embedding", settings)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_hostile_keys_stay_in_their_tenant(make_cache: MakeCache, redis_url: str, protocol: int) -> None:
    """Keys with glob characters, separators, odd bytes or great length never reach another school's keys."""
    cache = make_cache(redis_url, redis_protocol=protocol)
    for key in HOSTILE_KEYS:
        await cache.set(key, f"123:{key}", school_id=123)
        await cache.set(key, f"456:{key}", school_id=456)
    fresh = make_cache(redis_url, redis_protocol=protocol)  # empty memory: every read comes from Redis
    for key in HOSTILE_KEYS:
        assert await fresh.get(key, school_id=123) == f"123:{key}"
        assert await fresh.get(key, school_id=456) == f"456:{key}"
    import redis as sync_redis

    with sync_redis.Redis.from_url(redis_url) as raw:
        keys = [k.decode() for k in raw.scan_iter(match="*")]
    assert len(keys) == 2 * len(HOSTILE_KEYS)
    assert all(k.startswith(("cache:embedding:school:123:", "cache:embedding:school:456:")) for k in keys)
    assert all(len(k) <= 260 for k in keys)


async def test_clearing_one_school_leaves_the_others(make_cache: MakeCache, redis_url: str) -> None:
    """clear(school_id=12) removes school 12's keys, not school 1's, 123's or another cache's."""
    cache = make_cache(redis_url)
    for school in (1, 12, 123):
        await cache.set_many({f"k{i}": i for i in range(700)}, school_id=school)
    assert await cache.clear(school_id=12) == 700
    fresh = make_cache(redis_url)
    assert await fresh.get("k5", school_id=12) is None
    assert await fresh.get("k5", school_id=1) == 5
    assert await fresh.get("k699", school_id=123) == 699


async def test_successive_event_loops_reuse_the_manager(redis_server: RedisServer) -> None:
    """The same manager works from one asyncio.run() to the next (a client per loop, never a dead loop's)."""
    redis_server.flushall()
    cache = build_cache("llm", Settings(redis_url=redis_server.url, _env_file=None))  # type: ignore[call-arg]

    async def write() -> None:
        await cache.set("k", {"answer": 42}, school_id=5)

    async def read() -> object:
        try:
            return await cache.get("k", school_id=5)
        finally:
            await cache.aclose()

    await asyncio.to_thread(asyncio.run, write())
    assert await asyncio.to_thread(asyncio.run, read()) == {"answer": 42}
    assert cache.stats()["errors"] == 0


async def test_sigkill_during_traffic_falls_back_then_recovers(make_cache: MakeCache, own_redis: RedisServer) -> None:
    """Redis SIGKILLed mid-loop: no exception, earlier values served from memory; restarted: Redis used within 2 s."""
    cache = make_cache(own_redis.url)
    await cache.start()
    for i in range(50):
        await cache.set(f"k{i}", i, school_id=1)
    for i in range(400):
        if i == 100:
            own_redis.kill()
        await cache.set(f"loop{i % 20}", i, school_id=1)
        assert await cache.get(f"k{i % 50}", school_id=1) == i % 50
    stats = cache.stats()
    assert stats["breaker"] == "open"
    assert stats["fallbacks"] > 0
    assert (await cache.health())["redis_available"] is False

    own_redis.start()
    started = time.monotonic()
    with own_redis.client() as raw:
        raw.set("cache:embedding:school:1:written-after-restart", b"")  # not an envelope: must read as a miss
    from rag_api.cache._serialization import encode

    with own_redis.client() as raw:
        raw.set("cache:embedding:school:1:probe", encode("from-redis"))
    await wait_until_async(lambda: cache.get("probe", school_id=1), timeout=2.0, what="reads reach Redis again")
    assert time.monotonic() - started < 2.0
    assert (await cache.health())["redis_available"] is True


async def test_a_frozen_redis_costs_one_read_timeout(make_cache: MakeCache, own_redis: RedisServer) -> None:
    """With Redis frozen (SIGSTOP), only the first call waits for the read timeout; the breaker spares the rest."""
    cache = make_cache(own_redis.url, redis_socket_timeout=0.3)
    await cache.set("k", "v", school_id=1)
    own_redis.freeze()
    try:
        started = time.monotonic()
        for _ in range(50):
            assert await cache.get("k", school_id=1) == "v"
        elapsed = time.monotonic() - started
    finally:
        own_redis.thaw()
    assert cache.stats()["errors"] == 1
    assert elapsed < 2 * 0.3, f"50 reads took {elapsed:.2f}s; more than one read timeout was paid"
    await wait_until_async(lambda: asyncio.sleep(0, cache.breaker.closed), timeout=2, what="breaker closes on thaw")
