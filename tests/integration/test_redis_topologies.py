"""The cache on real Sentinel and Cluster topologies: tenants, clear, coherence and single flight across processes,
the topology in health, and a primary killed under load (issue #13)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from rag_api.cache import CacheManager, build_cache, tenant_key
from rag_api.config import Settings
from redis.crc import key_slot

from tests.integration.conftest import StartWorkers
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import ClusterTopology, SentinelTopology
from tests.support.wait import wait_until, wait_until_async

pytestmark = pytest.mark.integration
Topology = SentinelTopology | ClusterTopology
MakeCache = Callable[..., CacheManager]
FAST_PROBE = {"CACHE_BREAKER_PROBE_INTERVAL": "0.1"}


@pytest.fixture(params=["sentinel", "cluster"])
def topology(request: pytest.FixtureRequest) -> Topology:
    """The session's Sentinel or Cluster topology, emptied."""
    found: Topology = request.getfixturevalue(f"{request.param}_topology")
    found.flushall()
    return found


@pytest.fixture
async def make_cache() -> AsyncIterator[MakeCache]:
    made: list[CacheManager] = []

    def make(env: dict[str, str], **overrides: object) -> CacheManager:
        values = {k.lower(): v for k, v in {**env, **FAST_PROBE}.items()}
        cache = build_cache("embedding", Settings(_env_file=None, **{**values, **overrides}))  # type: ignore[call-arg]
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


def _school_keys(server: RedisServer, school: int) -> list[bytes]:
    with server.client() as raw:
        return list(raw.scan_iter(match=f"cache:embedding:school:{school}:*", count=1000))


async def test_a_school_clear_empties_it_on_every_primary(topology: Topology, make_cache: MakeCache) -> None:
    """Keys stay in their school; clearing school 7 removes its keys from every primary and none of school 8's."""
    cache = make_cache(topology.env())
    for i in range(300):
        await cache.set(f"k{i}", i, school_id=7)
        await cache.set(f"k{i}", -i, school_id=8)
    assert await cache.get("k5", school_id=7) == 5
    assert await cache.get("k5", school_id=8) == -5
    assert await cache.clear(school_id=7) == 300
    primaries = topology.primaries()
    per_primary = [len(_school_keys(node, 8)) for node in primaries]
    assert sum(per_primary) == 300
    if isinstance(topology, ClusterTopology):
        assert all(per_primary), f"school 8's keys should spread over every primary: {per_primary}"
    assert all(_school_keys(node, 7) == [] for node in primaries)
    fresh = make_cache(topology.env())
    assert await fresh.get("k5", school_id=7) is None
    assert await fresh.get("k5", school_id=8) == -5


async def test_health_names_the_topology_and_its_primaries(topology: Topology, make_cache: MakeCache) -> None:
    """The manager reports its topology, the primaries as Redis knows them, and no failover in steady state."""
    cache = make_cache(topology.env())
    await cache.set("k", 1, school_id=1)
    found = await cache.topology()
    assert found is not None
    assert found["mode"] == topology.env()["REDIS_MODE"]
    assert found["primaries"] == sorted(f"127.0.0.1:{node.port}" for node in topology.primaries())
    assert found["failover_in_progress"] is False
    info = await cache.redis_info()
    assert info is not None
    assert "used_memory" in info


def test_the_sync_api_works_in_each_topology(topology: Topology) -> None:
    """set_sync, get_sync, delete_sync and clear_sync reach Redis in a process that never runs a loop."""
    env = {k.lower(): v for k, v in topology.env().items()}
    writer = build_cache("embedding", Settings(_env_file=None, **env))  # type: ignore[call-arg]
    reader = build_cache("embedding", Settings(_env_file=None, **env))  # type: ignore[call-arg]
    try:
        for i in range(20):
            writer.set_sync(f"k{i}", i, school_id=3)
        assert [reader.get_sync(f"k{i}", school_id=3) for i in range(20)] == list(range(20))
        assert writer.delete_sync("k0", school_id=3) is True
        assert writer.clear_sync(school_id=3) == 19
        assert all(_school_keys(node, 3) == [] for node in topology.primaries())
    finally:
        writer.close_sync()
        reader.close_sync()


def test_a_write_on_one_process_reaches_the_others_memory(topology: Topology, start_workers: StartWorkers) -> None:
    """A value replaced on A is what B and C read within 1 s, though both had the old one in memory."""
    a, b, c = start_workers(topology.env())
    a.call(op="set", key="k", value="old")
    for worker in (b, c):
        assert worker.call(op="get", key="k") == {"value": "old", "tier": "redis"}
        assert worker.call(op="get", key="k") == {"value": "old", "tier": "memory"}
    a.call(op="set", key="k", value="new")
    for worker in (b, c):
        wait_until(lambda w=worker: w.call(op="get", key="k")["value"] == "new", timeout=1.0, interval=0.005)
    b.call(op="clear", school=1)
    for worker in (a, c):
        wait_until(lambda w=worker: w.call(op="get", key="k") is None, timeout=1.0, interval=0.005)


def test_300_concurrent_calls_over_3_processes_compute_once(topology: Topology, start_workers: StartWorkers) -> None:
    """300 concurrent get_or_compute calls for one cold key, 100 per process, compute once."""
    workers = start_workers(topology.env())
    for worker in workers:
        worker.send(op="burst", keys=["cold"], n=100, seconds=0.2)
    assert all(worker.recv() == ["cold"] * 100 for worker in workers)
    assert sum(worker.call(op="computes") for worker in workers) == 1


# ----- failover ---------------------------------------------------------------------------------------------
def _keys_on(topology: Topology, server: RedisServer, prefix: str, count: int) -> list[str]:
    """`count` cache keys of school 1 whose slot the primary `server` serves."""
    if isinstance(topology, SentinelTopology):
        return [f"{prefix}{i}" for i in range(count)]
    slots = topology.slots_of(server)
    found: list[str] = []
    for i in itertools.count():
        slot = key_slot(tenant_key("embedding", 1, f"{prefix}{i}").encode())
        if any(first <= slot <= last for first, last in slots):
            found.append(f"{prefix}{i}")
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
async def test_a_killed_primary_is_replaced_without_errors_or_restarts(
    kind: str, tmp_path: Path, make_cache: MakeCache
) -> None:
    """SIGKILL the primary under a read/write loop: no call fails, sharing resumes on the promoted replica within
    2 s of its promotion, entries written before the failover are still there, and a clear that ran into the
    failover finishes on the new topology with nothing missed."""
    topology: Topology = SentinelTopology(tmp_path) if kind == "sentinel" else ClusterTopology(tmp_path)
    try:
        await asyncio.to_thread(topology.start)
        a, b = make_cache(topology.env()), make_cache(topology.env())
        victim = topology.primaries()[0]
        old_keys = _keys_on(topology, victim, "old", 20)
        probe_keys = iter(_keys_on(topology, victim, "probe", 400))  # the victim's slots pass to its replica
        for key in old_keys:
            await a.set(key, "old", school_id=1)
        for i in range(200):  # school 2, on every primary, cleared while the failover runs
            await a.set(f"doomed{i}", i, school_id=2)
        heir = topology.replica_of(victim) if isinstance(topology, ClusterTopology) else topology.replica
        with heir.client() as raw:  # in the replica before the kill (replication is asynchronous)
            if isinstance(topology, ClusterTopology):
                raw.execute_command("READONLY")  # a cluster replica answers reads only after READONLY
            wait_until(lambda: all(raw.exists(tenant_key("embedding", 1, k)) for k in old_keys), timeout=5)

        for cache in (a, b):  # as the API's lifespan does
            await cache.start()
            await wait_until_async(lambda c=cache: _resubscribed(c, times=1), timeout=5, what="subscribed")

        errors: list[BaseException] = []
        stop = asyncio.Event()

        async def churn() -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                try:
                    await a.set(f"churn{i % 50}", i, school_id=1)
                    await b.get(f"churn{(i - 1) % 50}", school_id=1)
                    await b.get_or_compute(f"computed{i % 20}", lambda i=i: _value(i), school_id=1)
                except Exception as exc:
                    errors.append(exc)
                await asyncio.sleep(0.005)

        loop_task = asyncio.create_task(churn())
        await asyncio.sleep(0.2)
        await asyncio.to_thread(victim.kill)
        killed_at = time.monotonic()
        assert a.redis is not None
        clearing = asyncio.create_task(a.redis.clear("cache:embedding:school:2:"))  # the tier: past the breaker
        await asyncio.to_thread(
            wait_until, lambda: topology.promoted(heir), timeout=30, interval=0.01, what="the replica is promoted"
        )
        promoted_at = time.monotonic()

        with heir.client() as raw:

            async def shared() -> bool:
                key = next(probe_keys)
                await a.set(key, key, school_id=1)
                if not raw.exists(tenant_key("embedding", 1, key)):
                    return False
                found = await b.lookup(key, school_id=1)
                return found is not None and found.tier == "redis" and found.value == key

            await wait_until_async(shared, timeout=20, interval=0.01, what="A's write read by B from the new primary")
        shared_at = time.monotonic()
        stop.set()
        await loop_task
        assert await clearing == 200
        assert all(_school_keys(node, 2) == [] for node in topology.primaries())

        late = shared_at - promoted_at
        print(f"\n{kind}: promoted {promoted_at - killed_at:.2f}s after the kill; shared again {late:.2f}s later")
        assert errors == []
        assert late <= 2.0, f"sharing resumed {late:.2f}s after the promotion"
        fresh = make_cache(topology.env())
        assert [await fresh.get(key, school_id=1) for key in old_keys] == ["old"] * len(old_keys)
        for cache in (a, b):  # resubscribed (to a live node), having dropped what memory may have missed
            await wait_until_async(lambda c=cache: _resubscribed(c), timeout=5, what="resubscribed after failover")
        topo = await a.topology()
        assert topo is not None
        assert f"127.0.0.1:{heir.port}" in topo["primaries"]
    finally:
        await asyncio.to_thread(topology.stop)


async def _value(i: int) -> int:
    return i


async def _resubscribed(cache: CacheManager, times: int = 2) -> bool:
    stats = cache.stats()
    return bool(stats["coherent"]) and int(stats["resubscribes"]) >= times
