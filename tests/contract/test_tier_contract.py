"""One behaviour suite for every cache tier: the memory tier, Redis on fakeredis, a real redis-server, and real
Sentinel and Cluster topologies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from rag_api.cache import CacheTier, MemoryTier, RedisOptions, RedisTier

from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import ClusterTopology, SentinelTopology

PREFIX = "cache:embedding:school:1:"


@pytest.fixture(
    params=[
        "memory",
        "fakeredis",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("sentinel", marks=pytest.mark.integration),
        pytest.param("cluster", marks=pytest.mark.integration),
    ],
)
async def tier(request: pytest.FixtureRequest) -> AsyncIterator[CacheTier]:
    if request.param == "memory":
        yield MemoryTier(max_entries=10_000, max_bytes=10_000_000)
        return
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        redis_tier = RedisTier(
            RedisOptions(url="redis://fake"), channel="c", factory=lambda: fakeredis.FakeAsyncRedis(server=server)
        )
    elif request.param == "redis":
        real: RedisServer = request.getfixturevalue("redis_server")
        real.flushall()
        redis_tier = RedisTier(RedisOptions(url=real.url), channel="c")
    else:
        topology: SentinelTopology | ClusterTopology = request.getfixturevalue(f"{request.param}_topology")
        topology.flushall()
        redis_tier = RedisTier(topology.options(), channel="c")
    yield redis_tier
    await redis_tier.aclose()


async def test_missing_key_reads_none(tier: CacheTier) -> None:
    """A key never written reads as None."""
    assert await tier.get(PREFIX + "nope") is None


async def test_set_then_get_returns_the_same_bytes(tier: CacheTier) -> None:
    """Bytes written are read back unchanged, binary and empty-looking ones included."""
    payload = bytes(range(256)) * 30
    await tier.set(PREFIX + "a", payload, 60)
    assert await tier.get(PREFIX + "a") == payload


async def test_set_replaces(tier: CacheTier) -> None:
    """A second set of the same key replaces the first value."""
    await tier.set(PREFIX + "a", b"one", 60)
    await tier.set(PREFIX + "a", b"two", 60)
    assert await tier.get(PREFIX + "a") == b"two"


async def test_get_many_keeps_order_and_gaps(tier: CacheTier) -> None:
    """get_many answers in the order asked, with None where a key is missing."""
    await tier.set_many({PREFIX + "x": b"1", PREFIX + "z": b"3"}, 60)
    assert await tier.get_many([PREFIX + "z", PREFIX + "y", PREFIX + "x"]) == [b"3", None, b"1"]


async def test_delete_removes_and_counts(tier: CacheTier) -> None:
    """delete removes the keys that exist and says how many there were."""
    await tier.set_many({PREFIX + "a": b"1", PREFIX + "b": b"2"}, 60)
    assert await tier.delete([PREFIX + "a", PREFIX + "missing"]) == 1
    assert await tier.get(PREFIX + "a") is None
    assert await tier.get(PREFIX + "b") == b"2"


async def test_clear_removes_only_the_prefix(tier: CacheTier) -> None:
    """clear(prefix) removes that prefix's keys and leaves another tenant's keys alone."""
    other = "cache:embedding:school:12:"
    await tier.set_many({PREFIX + f"k{i}": b"v" for i in range(1200)}, 60)
    await tier.set(other + "k0", b"keep", 60)
    assert await tier.clear(PREFIX) == 1200
    assert await tier.get(PREFIX + "k7") is None
    assert await tier.get(other + "k0") == b"keep"


async def test_clear_treats_glob_characters_literally(tier: CacheTier) -> None:
    """A prefix with glob characters matches only itself, never a pattern."""
    await tier.set("cache:embedding:school:1:a", b"1", 60)
    await tier.set("cache:embedding:*:b", b"2", 60)
    assert await tier.clear("cache:embedding:*:") == 1
    assert await tier.get("cache:embedding:school:1:a") == b"1"
