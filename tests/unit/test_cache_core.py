"""The cache core's rules, each shown by injecting the interleaving that used to break it (no sleeps standing
in for it): no stale refill after a lease claim or a sync read, recovery in a later event loop, a memory tier
for processes that never run a loop, Redis lookups that cannot pile up, and memory hits that do not copy."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from array import array
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from rag_api.cache import CacheManager, CachePolicy, MemoryTier, RedisOptions, RedisTier, SyncRedisTier
from rag_api.cache._breaker import CircuitBreaker
from rag_api.cache._invalidation import Notice
from rag_api.cache._resolver import HostResolver

from tests.support.wait import wait_until, wait_until_async


def manager(server: fakeredis.FakeServer, **policy: Any) -> CacheManager:
    options = RedisOptions(url="redis://fake")
    return CacheManager(
        "embedding",
        memory=MemoryTier(max_entries=1000, max_bytes=10**7),
        redis=RedisTier(options, channel="inv", factory=lambda: fakeredis.FakeAsyncRedis(server=server)),
        sync_redis=SyncRedisTier(options, channel="inv", factory=lambda: fakeredis.FakeRedis(server=server)),
        policy=CachePolicy(probe_interval=0.02, **policy),
    )


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


async def coherent(*managers: CacheManager) -> None:
    for m in managers:
        await m.start()
    await wait_until_async(lambda: asyncio.sleep(0, all(m.stats()["coherent"] for m in managers)), timeout=5)


async def test_a_claim_never_refills_memory_with_a_value_replaced_meanwhile(server: fakeredis.FakeServer) -> None:
    """B's claim reads v1; A writes v2 and B hears of it before the claim's reply is used: B's memory must not
    keep v1 (it did, for up to CACHE_MEMORY_TTL_MAX, when the claim path refilled without the generation check)."""
    a, b = manager(server), manager(server)
    await coherent(a, b)
    assert b.redis is not None
    claim = b.redis.claim

    async def interleaved(*args: Any, **kwargs: Any) -> Any:
        heard = b.counters.invalidations
        await a.set("k", "v1", school_id=1)  # after B's lookup missed, before its claim reads
        await wait_until_async(lambda: asyncio.sleep(0, b.counters.invalidations > heard), timeout=5)
        heard = b.counters.invalidations
        replies = await claim(*args, **kwargs)  # reads v1
        await a.set("k", "v2", school_id=1)
        await wait_until_async(lambda: asyncio.sleep(0, b.counters.invalidations > heard), timeout=5)
        return replies

    b.redis.claim = interleaved  # type: ignore[method-assign]

    async def never() -> str:
        raise AssertionError("B found v1 in Redis: nothing to compute")

    assert (await b.resolve("k", never, school_id=1)).value == "v1"
    assert await b.get("k", school_id=1) == "v2"
    for m in (a, b):
        await m.aclose()


def test_a_sync_read_never_refills_memory_with_a_value_replaced_meanwhile(server: fakeredis.FakeServer) -> None:
    """The same rule on the sync path: a value read before an invalidation arrived does not refill memory."""
    a, b = manager(server), manager(server)
    b.get_sync("warm-up", school_id=1)
    wait_until(lambda: b.stats()["coherent"], timeout=5, what="B's sync listener subscribed")
    a.set_sync("k", "v1", school_id=1)
    assert b.sync_redis is not None
    get = b.sync_redis.get

    def interleaved(key: str) -> bytes | None:
        data = get(key)  # v1
        heard = b.counters.invalidations
        a.set_sync("k", "v2", school_id=1)
        wait_until(lambda: b.counters.invalidations > heard, timeout=5, what="B heard of v2")
        return data

    b.sync_redis.get = interleaved  # type: ignore[method-assign]
    assert b.get_sync("k", school_id=1) == "v1"
    b.sync_redis.get = get  # type: ignore[method-assign]
    assert b.get_sync("k", school_id=1) == "v2"
    a.close_sync()
    b.close_sync()


def test_the_breaker_closes_in_a_later_event_loop(server: fakeredis.FakeServer) -> None:
    """Redis dies during one asyncio.run, comes back, and a later asyncio.run writes to Redis again (the probe
    of the first loop died with it)."""
    cache = manager(server)

    async def job1() -> None:
        await cache.set("before", "x", school_id=1)
        server.connected = False
        await cache.set("during", "x", school_id=1)
        assert cache.breaker.state == "open"

    asyncio.run(job1())
    server.connected = True

    async def job2() -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            await cache.set("after", "x", school_id=1)
            if fakeredis.FakeRedis(server=server).exists("cache:embedding:school:1:after"):
                return True
            await asyncio.sleep(0.02)
        return False

    assert asyncio.run(job2())
    assert cache.breaker.closed


def test_a_process_without_an_event_loop_serves_memory_hits_without_redis(server: fakeredis.FakeServer) -> None:
    """In code that never runs a loop, a thread holds the invalidation subscription: a repeated get_sync is a
    memory hit with no Redis call, and a peer's write still reaches it."""
    cache, peer = manager(server), manager(server)
    cache.set_sync("k", "v1", school_id=1)
    wait_until(lambda: cache.stats()["coherent"], timeout=5, what="the sync listener subscribed")
    assert cache.get_sync("k", school_id=1) == "v1"  # (memory was dropped when it subscribed) from Redis
    assert cache.sync_redis is not None
    calls = []
    get = cache.sync_redis.get
    cache.sync_redis.get = lambda key: calls.append(key) or get(key)  # type: ignore[method-assign]
    before = cache.counters.memory_hits
    assert [cache.get_sync("k", school_id=1) for _ in range(100)] == ["v1"] * 100
    assert calls == []
    assert cache.counters.memory_hits == before + 100
    peer.set_sync("k", "v2", school_id=1)
    wait_until(lambda: cache.get_sync("k", school_id=1) == "v2", timeout=5, what="the peer's write is heard")
    cache.close_sync()
    peer.close_sync()


class SlowLookup:
    """A resolver that answers after `release` is set, counting lookups and those running at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(10)
        with self._lock:
            self.running -= 1
        raise socket.gaierror("no such host")


@pytest.fixture
def slow() -> Iterator[SlowLookup]:
    lookup = SlowLookup()
    yield lookup
    lookup.release.set()


async def test_redis_lookups_never_pile_up_nor_take_the_loops_threads(slow: SlowLookup) -> None:
    """Fifty connection attempts to a host whose lookup hangs start one lookup, each gives up after its own
    connect timeout, and the loop's default executor (the model client's lookups) stays free."""
    resolver = HostResolver(slow)
    loop = asyncio.get_running_loop()

    async def attempt() -> str:
        try:
            return await resolver.resolve("redis.slow.test", 6379, 0.05)
        except Exception as exc:
            return type(exc).__name__

    answers = await asyncio.gather(*(attempt() for _ in range(50)))
    assert set(answers) == {"ConnectionError"}
    assert await asyncio.wait_for(loop.run_in_executor(None, lambda: "free"), 1) == "free"
    assert (slow.calls, slow.most) == (1, 1)
    slow.release.set()
    await wait_until_async(lambda: asyncio.sleep(0, slow.running == 0), timeout=5)
    with pytest.raises(Exception, match="less than a second ago"):  # the failure is remembered for a moment
        await resolver.resolve("redis.slow.test", 6379, 0.05)
    assert slow.calls == 1
    assert await resolver.resolve("127.0.0.1", 6379, 0.05) == "127.0.0.1"  # an address is not looked up


async def test_a_cache_whose_redis_name_hangs_keeps_answering_from_memory(slow: SlowLookup) -> None:
    """A manager whose Redis host never resolves serves memory after the first failure and, while its probe and
    listener keep retrying, never has more than one lookup running."""
    from rag_api.cache import _resolver

    original = _resolver.resolver
    _resolver.resolver = HostResolver(slow)
    try:
        options = RedisOptions(url="redis://redis.slow.test:6379/0", connect_timeout=0.05, socket_timeout=0.05)
        cache = CacheManager(
            "embedding",
            memory=MemoryTier(max_entries=100, max_bytes=10**6),
            redis=RedisTier(options, channel="inv"),
            policy=CachePolicy(probe_interval=0.02),
        )
        await cache.set("k", "v", school_id=1)
        started = time.monotonic()
        for _ in range(50):
            assert await cache.get("k", school_id=1) == "v"
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 3
        assert slow.most == 1
        await cache.aclose()
    finally:
        _resolver.resolver = original


async def test_a_memory_hit_hands_out_the_cached_vector_without_copying(server: fakeredis.FakeServer) -> None:
    """An embedding comes back as one read-only float32 view: the same object on every hit, not writable."""
    cache = manager(server)
    await coherent(cache)
    await cache.set("v", array("f", [0.25, 0.5, 1.0]), school_id=1)
    first, second = await cache.get("v", school_id=1), await cache.get("v", school_id=1)
    assert first is second
    assert (first.format, first.readonly, first.tolist()) == ("f", True, [0.25, 0.5, 1.0])
    with pytest.raises(TypeError):
        first[0] = 2.0
    await cache.set("d", {"a": [1]}, school_id=1)
    mine = await cache.get("d", school_id=1)
    mine["a"].append(2)  # a JSON value is each reader's own copy
    assert await cache.get("d", school_id=1) == {"a": [1]}
    await cache.aclose()


def test_the_breaker_opens_at_its_threshold_and_closes_on_demand() -> None:
    """Consecutive failures open it once; a success resets the count; close() closes it."""
    breaker = CircuitBreaker(failure_threshold=2)
    assert not breaker.record_failure()
    breaker.record_success()
    assert not breaker.record_failure()
    assert breaker.record_failure()
    assert (breaker.state, breaker.times_opened) == ("open", 1)
    assert not breaker.record_failure()  # already open: not opened twice
    breaker.close()
    assert breaker.closed


@pytest.mark.parametrize(
    "notice", [Notice("me", keys=("a", "b")), Notice("me", prefix="cache:x:"), Notice("me", ("k",), "p:")]
)
def test_a_notice_round_trips(notice: Notice) -> None:
    """What a write announces is read back the same by its peers."""
    assert Notice.decode(notice.encode()) == notice


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"k": ["a"]}', b'{"s": 1}', b'{"s": "x", "k": [1]}'])
def test_a_foreign_notice_is_ignored(data: bytes) -> None:
    """Anything on the channel that is not one of our notices decodes to None, never an exception."""
    assert Notice.decode(data) is None


async def test_single_flight_computes_once_per_key_for_concurrent_callers(server: fakeredis.FakeServer) -> None:
    """Many callers in one process, two managers on one Redis: one compute per key; a failure reaches every
    caller and is not cached."""
    a, b = manager(server), manager(server)
    await coherent(a, b)
    calls: list[str] = []
    gate = asyncio.Event()

    async def compute(keys: list[str]) -> list[str]:
        calls.extend(keys)
        await gate.wait()
        return [f"value of {k}" for k in keys]

    waits = [m.resolve_many(["x", "y"], compute, school_id=1) for m in (a, b) for _ in range(10)]
    tasks = [asyncio.ensure_future(w) for w in waits]
    await wait_until_async(lambda: asyncio.sleep(0, len(calls) >= 2), timeout=5)
    gate.set()
    answers = await asyncio.gather(*tasks)
    assert sorted(calls) == ["x", "y"]
    assert all([lk.value for lk in found] == ["value of x", "value of y"] for found in answers)

    async def boom(keys: list[str]) -> list[str]:
        raise RuntimeError("model down")

    results = await asyncio.gather(
        *(a.resolve_many(["z"], boom, school_id=1) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await a.get("z", school_id=1) is None
    for m in (a, b):
        await m.aclose()
