"""Three OS processes, each with its own CacheManager, on one real redis-server (issue: coherence, single flight)."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import StartWorkers
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["2", "3"])
def test_a_replaced_value_reaches_the_other_processes_within_1s(
    start_workers: StartWorkers, redis_url: str, protocol: str
) -> None:
    """A value replaced on A is what B and C read within 1 s, though both had the old one in memory."""
    a, b, c = start_workers(redis_url, REDIS_PROTOCOL=protocol)
    a.call(op="set", key="k", value="old")
    for worker in (b, c):
        assert worker.call(op="get", key="k")["value"] == "old"
        assert worker.call(op="get", key="k")["tier"] == "memory"
    a.call(op="set", key="k", value="new")
    started = time.monotonic()
    for worker in (b, c):
        wait_until(lambda w=worker: w.call(op="get", key="k")["value"] == "new", timeout=1.0, interval=0.005)
    assert time.monotonic() - started < 1.0


def test_clearing_a_school_empties_it_in_every_memory_tier(start_workers: StartWorkers, redis_url: str) -> None:
    """clear(school_id) on B removes that school from A's and C's memory tiers, and no other school."""
    a, b, c = start_workers(redis_url)
    for school in (7, 8):
        a.call(op="set", key="k", value=f"v{school}", school=school)
        for worker in (a, c):
            assert worker.call(op="get", key="k", school=school)["value"] == f"v{school}"
    b.call(op="clear", school=7)
    for worker in (a, c):
        wait_until(lambda w=worker: w.call(op="get", key="k", school=7) is None, timeout=1.0, interval=0.005)
        assert worker.call(op="get", key="k", school=8)["value"] == "v8"


def test_no_process_serves_a_value_cleared_while_it_was_disconnected(
    start_workers: StartWorkers, own_redis: RedisServer
) -> None:
    """After Redis is killed and restarted, a value cleared before every process reconnected is served by none."""
    a, b, c = start_workers(own_redis.url)
    b.call(op="set", key="k", value="stale")
    with own_redis.client() as raw:  # make sure the write is in the AOF before the kill
        raw.execute_command("BGREWRITEAOF")
        wait_until(lambda: raw.info("persistence")["aof_rewrite_in_progress"] == 0, timeout=5)
    for worker in (a, b, c):
        assert worker.call(op="get", key="k")["value"] == "stale"
    own_redis.kill()
    for worker in (a, c):  # served from memory while Redis is down
        assert worker.call(op="get", key="k")["value"] == "stale"
    own_redis.start()
    with own_redis.client() as raw:
        assert raw.exists("cache:embedding:school:1:k")  # AOF kept it
    assert b.call(op="clear", school=1) == 1  # reaches Redis at once: B's dead pooled connection is replaced
    with own_redis.client() as raw:
        assert not raw.exists("cache:embedding:school:1:k")
    for worker in (a, c):
        # Until its probe sees Redis back (at most one probe interval), a process serves memory as its fallback.
        # From then on it reads Redis until resubscribed, and drops its memory when it resubscribes.
        wait_until(lambda w=worker: w.call(op="stats")["breaker"] == "closed", timeout=2, interval=0.005)
        assert worker.call(op="get", key="k") is None
    for worker in (a, b, c):
        worker.wait_coherent()
        assert worker.call(op="get", key="k") is None


def test_300_concurrent_cold_calls_over_3_processes_compute_once(start_workers: StartWorkers, redis_url: str) -> None:
    """300 concurrent get_or_compute calls for one cold key, 100 per process, run compute exactly once."""
    workers = start_workers(redis_url)
    for worker in workers:
        worker.send(op="burst", keys=["cold"], n=100, seconds=0.2)
    results = [worker.recv() for worker in workers]
    assert all(r == ["cold"] * 100 for r in results)
    assert sum(worker.call(op="computes") for worker in workers) == 1


def test_50_distinct_cold_keys_compute_50_times(start_workers: StartWorkers, redis_url: str) -> None:
    """300 concurrent calls over 50 distinct cold keys, spread over 3 processes, compute exactly 50 times."""
    workers = start_workers(redis_url)
    keys = [f"key-{i}" for i in range(50)]
    for worker in workers:
        worker.send(op="burst", keys=keys, n=100, seconds=0.2)
    for worker in workers:
        assert sorted(set(worker.recv())) == sorted(keys)
    assert sum(worker.call(op="computes") for worker in workers) == 50


def test_a_dead_lease_holder_is_taken_over_once(start_workers: StartWorkers, redis_url: str) -> None:
    """When the lease holder dies mid-compute, the others finish within lease TTL plus one compute, computing once."""
    lease_ttl, compute = 1.0, 0.2
    holder, b, c = start_workers(redis_url, CACHE_LEASE_TTL=str(lease_ttl))
    holder.send(op="burst", keys=["slow"], n=1, seconds=60)
    with holder_redis(redis_url) as raw:
        wait_until(lambda: raw.exists("lease:cache:embedding:school:1:slow"), timeout=5, what="holder has the lease")
    for worker in (b, c):
        worker.send(op="burst", keys=["slow"], n=50, seconds=compute)
    started = time.monotonic()
    holder.kill()
    assert b.recv() == ["slow"] * 50
    assert c.recv() == ["slow"] * 50
    elapsed = time.monotonic() - started
    assert b.call(op="computes") + c.call(op="computes") == 1
    assert elapsed < lease_ttl + compute + 0.5, f"took {elapsed:.2f}s"


def test_a_computation_longer_than_the_lease_is_not_duplicated(start_workers: StartWorkers, redis_url: str) -> None:
    """A holder computing for 2.5 lease TTLs renews its lease, so the waiting process never computes too."""
    holder, waiter = start_workers(redis_url, count=2, CACHE_LEASE_TTL="0.4")
    holder.send(op="burst", keys=["long"], n=1, seconds=1.0)
    with holder_redis(redis_url) as raw:
        wait_until(lambda: raw.exists("lease:cache:embedding:school:1:long"), timeout=5, what="holder has the lease")
    waiter.send(op="burst", keys=["long"], n=10, seconds=0.01)
    assert holder.recv() == ["long"]
    assert waiter.recv() == ["long"] * 10
    assert holder.call(op="computes") == 1
    assert waiter.call(op="computes") == 0


def holder_redis(url: str):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(url)
