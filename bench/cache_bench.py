"""The cache layer on its own: memory hits (next to cashews' two-level cache, and the sync API in a process
without an event loop), Redis-tier hits against a bare GET, bytes per embedding, and how long until another
process's memory tier drops a replaced value.

`python -m bench.cache_bench sync-hit REDIS_URL` is the loop-less part, run in a process of its own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import subprocess
import sys
import time
from array import array
from typing import Any

import redis.asyncio as aredis
from rag_api.cache import CacheManager, build_cache
from rag_api.cache._keys import tenant_key
from rag_api.cache._serialization import encode
from rag_api.config import Settings

from ._common import summary, verdict

DIM = 1536


def embedding() -> list[float]:
    raw = [random.gauss(0, 1) for _ in range(DIM)]
    norm = sum(x * x for x in raw) ** 0.5
    return array("f", [x / norm for x in raw]).tolist()  # float32-representable, as OpenAI's are


def settings(url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=url, _env_file=None, **overrides)


def time_sync(fn: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


async def time_async(fn: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return samples


async def memory_hits(url: str, n: int) -> dict[str, Any]:
    cache = build_cache("embedding", settings(url, redis_enabled=False))
    vector = embedding()
    await cache.set("vec", vector, school_id=1)
    await cache.set("raw", array("f", vector), school_id=1)
    await cache.set("doc", {"id": "chatcmpl-1", "choices": [{"message": {"content": "x" * 200}}]}, school_id=1)
    full = tenant_key("embedding", 1, "raw")
    gc.disable()
    try:
        figures = {
            "memory_tier_get": summary(time_sync(lambda: cache.memory.get_nowait(full), n)),
            "manager_get_array_embedding": summary(await time_async(lambda: cache.get("raw", school_id=1), n)),
            "manager_get_json_document": summary(await time_async(lambda: cache.get("doc", school_id=1), n)),
            "manager_get_float_list_1536": summary(await time_async(lambda: cache.get("vec", school_id=1), n)),
        }
    finally:
        gc.enable()
    return figures


async def cashews_hits(url: str, n: int) -> dict[str, Any]:
    """cashews' two-level cache (`client_side=True`: memory in front of Redis, invalidated over pub/sub), a
    memory hit of the same 1536-d float32 embedding as ours."""
    try:
        from cashews import Cache
    except ImportError:  # a bench-only extra: `pip install -e '.[bench]'`
        return {}
    cache = Cache()
    cache.setup(url, client_side=True)
    vector = array("f", embedding())
    await cache.set("bench:cashews:raw", vector, expire=3600)
    assert await cache.get("bench:cashews:raw") == vector
    for _ in range(200):
        await cache.get("bench:cashews:raw")
    gc.disable()
    try:
        samples = await time_async(lambda: cache.get("bench:cashews:raw"), n)
    finally:
        gc.enable()
    await cache.close()
    return {"cashews_client_side_get_array_embedding": summary(samples)}


def sync_hits(url: str, n: int) -> dict[str, Any]:
    """get_sync memory hits in this process, which must never have run an event loop."""
    cache = build_cache("embedding", settings(url))
    cache.set_sync("raw", array("f", embedding()), school_id=1)
    for _ in range(500):  # the invalidation thread subscribes (memory is trusted from then on)
        if cache.stats()["coherent"]:
            break
        time.sleep(0.01)
    cache.get_sync("raw", school_id=1)  # refills memory after the subscription dropped it
    before = cache.stats()["memory_hits"]
    gc.disable()
    try:
        samples = time_sync(lambda: cache.get_sync("raw", school_id=1), n)
    finally:
        gc.enable()
    served = cache.stats()["memory_hits"] - before
    cache.close_sync()
    return {"get_sync_memory_hit_array_embedding": summary(samples), "get_sync_memory_hits": served}


def sync_hits_in_own_process(url: str, n: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.cache_bench", "sync-hit", url, str(n)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


async def redis_hits(url: str, n: int) -> dict[str, Any]:
    # A memory tier too small for one embedding: every read goes to Redis, through the whole manager path.
    cache = build_cache("embedding", settings(url, cache_max_bytes=1024))
    await cache.start()
    vector = embedding()
    await cache.set("raw", array("f", vector), school_id=1)
    await cache.set("vec", vector, school_id=1)
    bare = aredis.Redis.from_url(url)
    raw_key = tenant_key("embedding", 1, "raw")
    stored = await bare.get(raw_key)
    assert isinstance(stored, bytes), "the cache wrote the embedding"
    await bare.set("bare:embedding", stored)
    for _ in range(200):  # warm connections and code paths
        await bare.get("bare:embedding")
        await cache.get("raw", school_id=1)
    figures: dict[str, Any] = {}
    # Interleave rounds so that both paths see the same machine noise.
    bare_samples: list[float] = []
    raw_samples: list[float] = []
    vec_samples: list[float] = []
    for _ in range(10):
        bare_samples += await time_async(lambda: bare.get("bare:embedding"), n // 10)
        raw_samples += await time_async(lambda: cache.get("raw", school_id=1), n // 10)
        vec_samples += await time_async(lambda: cache.get("vec", school_id=1), n // 10)
    figures["bare_redis_get"] = summary(bare_samples)
    figures["redis_tier_get_array_embedding"] = summary(raw_samples)
    figures["redis_tier_get_float_list_1536"] = summary(vec_samples)
    assert cache.stats()["memory_hits"] == 0, "the Redis-tier benchmark must not be served from memory"
    figures["stored_value_bytes"] = len(stored)
    figures["redis_memory_usage_bytes_per_embedding"] = await bare.memory_usage(raw_key)
    figures["envelope_bytes_float_list"] = len(encode(vector))
    await bare.aclose()
    await cache.aclose()
    return figures


async def invalidation_delay(url: str, n: int) -> dict[str, Any]:
    """Time from A's set returning until B (its own connection and subscription) reads the new value."""
    a: CacheManager = build_cache("embedding", settings(url))
    b: CacheManager = build_cache("embedding", settings(url))
    await a.start()
    await b.start()
    for _ in range(1000):  # both subscribed to invalidations, within 5 s
        if a.stats()["coherent"] and b.stats()["coherent"]:
            break
        await asyncio.sleep(0.005)
    samples = []
    for i in range(n):
        await a.set("k", i, school_id=1)
        assert await b.get("k", school_id=1) == i
        assert await b.get("k", school_id=1) == i  # now in B's memory
        await a.set("k", -i - 1, school_id=1)
        t0 = time.perf_counter()
        deadline = t0 + 1.0
        while await b.get("k", school_id=1) != -i - 1:
            if time.perf_counter() > deadline:
                raise RuntimeError("B did not see A's write within 1 s")
            await asyncio.sleep(0)
        samples.append(time.perf_counter() - t0)
    await a.aclose()
    await b.aclose()
    return {"invalidation_delay": summary(samples)}


async def run(url: str) -> tuple[dict[str, Any], bool]:
    figures = {
        **await memory_hits(url, 20000),
        **await cashews_hits(url, 20000),
        **sync_hits_in_own_process(url, 20000),
        **await redis_hits(url, 5000),
        **await invalidation_delay(url, 100),
    }
    print("cache layer:")
    ok = verdict("memory-tier hit, median", figures["memory_tier_get"]["median_us"], 2.0, "us")
    manager_hit = figures["manager_get_array_embedding"]["median_us"]
    ok &= verdict("manager.get() memory hit, 1536-d float32 embedding, median", manager_hit, 2.0, "us")
    if "cashews_client_side_get_array_embedding" in figures:
        theirs = figures["cashews_client_side_get_array_embedding"]["median_us"]
        print(f"  info  cashews two-level cache (client_side) memory hit, same embedding: {theirs} us")
        figures["cashews_over_ours"] = round(theirs / manager_hit, 2)
        ratio = figures["cashews_over_ours"]
        ok &= verdict("cashews' hit time / ours (medians)", ratio, 2.5, "x", lower_is_better=False)
    else:
        print("  skip  cashews not installed (pip install -e '.[bench]')")
    sync_hit = figures["get_sync_memory_hit_array_embedding"]["median_us"]
    ok &= verdict("get_sync memory hit in a process without an event loop, median", sync_hit, 3.0, "us")
    ratio = figures["redis_tier_get_array_embedding"]["median_us"] / figures["bare_redis_get"]["median_us"]
    ratio_list = figures["redis_tier_get_float_list_1536"]["median_us"] / figures["bare_redis_get"]["median_us"]
    figures["redis_hit_over_bare_get"] = round(ratio, 3)
    figures["redis_hit_float_list_over_bare_get"] = round(ratio_list, 3)
    print(f"  info  bare redis.asyncio GET median {figures['bare_redis_get']['median_us']} us")
    ok &= verdict("Redis-tier hit (array('f') embedding) / bare GET, medians", ratio, 1.3, "x")
    # A Python list of floats also pays tolist() (about 10 us for 1536); the API stores array('f').
    print(f"  info  Redis-tier hit (1536 float list) / bare GET, medians: {ratio_list:.3f} x")
    ok &= verdict(
        "Redis MEMORY USAGE per 1536-d embedding", figures["redis_memory_usage_bytes_per_embedding"] / 1000, 6.5, "KB"
    )
    print(f"  info  manager memory hit, JSON document: {figures['manager_get_json_document']['median_us']} us; "
          f"1536 float list: {figures['manager_get_float_list_1536']['median_us']} us")  # fmt: skip
    ok &= verdict("time until B sees A's write, median", figures["invalidation_delay"]["median_us"] / 1000, 1000, "ms")
    return figures, ok


if __name__ == "__main__" and sys.argv[1:2] == ["sync-hit"]:
    print(json.dumps(sync_hits(sys.argv[2], int(sys.argv[3]))))
