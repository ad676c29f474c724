"""Fair sharing between schools: one school's flood of unique inputs evicts its own entries from the memory
tier, not another school's, and writes to Redis only within its per-school budget."""

from __future__ import annotations

import fakeredis
from rag_api.cache import CacheManager, CachePolicy, MemoryTier, RedisOptions, RedisTier
from rag_api.cache._admission import WriteAdmission


def key(school: int, n: int) -> str:
    return f"cache:embedding:school:{school}:k{n}"


def test_a_flooding_school_evicts_only_its_own_memory_entries() -> None:
    """With a share of 0.5, school 456 writing 1,000 entries into a 100-entry tier leaves school 123's 10 hot
    entries in place and holds at most 50 itself."""
    tier = MemoryTier(max_entries=100, max_bytes=10**7, tenant_share=0.5)
    for n in range(10):
        tier.set_nowait(key(123, n), b"hot", 60)
    for n in range(1000):
        tier.set_nowait(key(456, n), b"flood", 60)
        tier.get_nowait(key(123, n % 10))  # school 123 keeps using its hot set
    assert all(tier.get_nowait(key(123, n)) == b"hot" for n in range(10))
    figures = tier.tenant_figures()
    assert figures["456"]["entries"] == 50
    assert tier.tenant_evictions == 950


def test_the_write_budget_is_per_school() -> None:
    """A bucket per school: 456's burst is spent, 123's is untouched, and tokens come back with time."""
    now = [0.0]
    admission = WriteAdmission(rate=10, burst=20, clock=lambda: now[0])
    flood = [key(456, n) for n in range(100)]
    assert admission.admit(flood) == flood[:20]
    assert admission.admit([key(123, 1), key(456, 100)]) == [key(123, 1)]
    now[0] += 1.0
    assert len(admission.admit(flood)) == 10


async def test_computed_values_past_the_budget_are_answered_but_not_shared() -> None:
    """School 456 computing 256 unique keys with a burst of 50 writes 50 to Redis (the rest are answered and
    counted as refused); school 123's computed values all reach Redis."""
    server = fakeredis.FakeServer()
    options = RedisOptions(url="redis://fake")
    cache = CacheManager(
        "embedding",
        memory=MemoryTier(max_entries=10_000, max_bytes=10**8),
        redis=RedisTier(options, channel="inv", factory=lambda: fakeredis.FakeAsyncRedis(server=server)),
        policy=CachePolicy(tenant_write_rate=1, tenant_write_burst=50),
    )

    async def compute(keys: list[str]) -> list[str]:
        return [f"v-{k}" for k in keys]

    found = await cache.resolve_many([f"f{n}" for n in range(256)], compute, school_id=456)
    assert [lk.value for lk in found] == [f"v-f{n}" for n in range(256)]
    mine = await cache.resolve_many([f"h{n}" for n in range(20)], compute, school_id=123)
    assert len(mine) == 20
    redis = fakeredis.FakeRedis(server=server)
    assert len(list(redis.scan_iter(match="cache:embedding:school:456:*"))) == 50
    assert len(list(redis.scan_iter(match="cache:embedding:school:123:*"))) == 20
    assert cache.stats()["writes_refused"] == 206
    await cache.aclose()
