"""The Python-client parts of the end-to-end bench (where throughput does not matter): warming, the Zipf
hit-ratio workload, and Redis memory per cached entry."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import redis

from ._e2e_stack import ADMIN, TENANT, wait

MODEL = "text-embedding-3-small"
AUTH = {"Authorization": f"Bearer {TENANT}"}


def embedding_body(text: str | list[str]) -> dict[str, Any]:
    """What the `openai` SDK sends for `client.embeddings.create(model=..., input=...)`: base64 floats."""
    return {"model": MODEL, "input": text, "encoding_format": "base64"}


def warm(urls: Sequence[str], texts: Sequence[str], *, rounds: int = 3) -> Counter[str]:
    """Ask every URL for every text `rounds` times (first to fill Redis, then every memory tier); the
    X-Cache-Tier values of the last round."""
    tiers: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        for round_no in range(rounds):
            for url in urls:
                for text in texts:
                    res = client.post(f"{url}/v1/embeddings", json=embedding_body(text), headers=AUTH)
                    res.raise_for_status()
                    if round_no == rounds - 1:
                        tiers[res.headers.get("x-cache-tier", "?")] += 1
    return tiers


def stats(url: str) -> dict[str, Any]:
    """This replica's embedding cache counters (`/cache/stats`)."""
    res = httpx.get(f"{url}/cache/stats", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5)
    res.raise_for_status()
    body: dict[str, Any] = res.json()["embedding"]
    return body


def wait_coherent(urls: Sequence[str], *, timeout: float = 20) -> None:
    """Until every replica's embedding cache has Redis, a closed breaker and its invalidation subscription
    (only then does it trust its memory tier, so that hits are memory hits again)."""

    def ready() -> bool:
        return all(s["coherent"] and s["breaker"] == "closed" for s in map(stats, urls))

    wait(ready, timeout=timeout, what="every replica subscribed to invalidations, breaker closed")


def wait_breaker_open(urls: Sequence[str], text: str, *, timeout: float = 20) -> None:
    """Until every replica serves `text` from memory with Redis down (the first request opens the breaker)."""

    def memory_hit(url: str) -> bool:
        res = httpx.post(f"{url}/v1/embeddings", json=embedding_body(text), headers=AUTH, timeout=10)
        return res.status_code == 200 and res.headers.get("x-cache-tier") == "memory"

    def ready() -> bool:
        return all(memory_hit(u) for u in urls) and all(stats(u)["breaker"] != "closed" for u in urls)

    wait(ready, timeout=timeout, what="every replica serves from memory with its breaker open")


def zipf_sequence(*, requests: int, texts: int, s: float, seed: int) -> list[int]:
    """A seeded Zipf(s) sequence of text indices: index k is drawn with probability proportional to 1/k^s."""
    weights = [1.0 / (k**s) for k in range(1, texts + 1)]
    return random.Random(seed).choices(range(texts), weights=weights, k=requests)


async def _replay(url: str, sequence: Sequence[int], *, concurrency: int, tag: str) -> dict[str, Any]:
    """Send the sequence in order with `concurrency` requests in flight; count X-Cache and X-Instance."""
    results: Counter[str] = Counter()
    instances: Counter[str] = Counter()
    queue = iter(enumerate(sequence))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:

        async def worker() -> None:
            for _, k in queue:
                res = await client.post("/v1/embeddings", json=embedding_body(f"zipf {tag} text {k}"))
                results[res.headers.get("x-cache", f"status {res.status_code}")] += 1
                instances[res.headers.get("x-instance", "?")] += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    total = sum(results.values())
    return {
        "requests": total,
        "hit_ratio": round(results["HIT"] / total, 4) if total else 0.0,
        "x_cache": dict(results),
        "instances": dict(instances),
        "seconds": round(elapsed, 2),
    }


def zipf_hit_ratio(url: str, sequence: Sequence[int], *, concurrency: int, tag: str) -> dict[str, Any]:
    return asyncio.run(_replay(url, sequence, concurrency=concurrency, tag=tag))


def _cache_memory(client: redis.Redis) -> int:
    """`used_memory` less what is not the data: client buffers and the AOF buffer (waited to drain first,
    as appendfsync everysec holds up to a second of writes)."""
    info: dict[str, Any] = {}

    def drained() -> bool:
        info.update(client.info("memory"))
        return int(info["mem_aof_buffer"]) < 4096  # an emptied buffer keeps a small allocation

    wait(drained, timeout=10, what="Redis's AOF buffer is written out", interval=0.1)
    transient = sum(int(info.get(k, 0)) for k in ("mem_clients_normal", "mem_clients_slaves", "mem_aof_buffer"))
    return int(info["used_memory"]) - transient


def _sample_key(client: redis.Redis, pattern: str) -> tuple[int, int]:
    """MEMORY USAGE and STRLEN of one key matching `pattern`."""
    for key in client.scan_iter(match=pattern, count=1000):
        return int(client.memory_usage(key, samples=0) or 0), int(client.strlen(key))
    return 0, 0


async def _post_all(url: str, path: str, bodies: Sequence[dict[str, Any]], *, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(body: dict[str, Any]) -> None:
            async with gate:
                res = await client.post(path, json=body)
                res.raise_for_status()

        await asyncio.gather(*(one(b) for b in bodies))


def redis_memory(url: str, stub_url: str, redis_url: str, *, embeddings: int, chats: int) -> dict[str, Any]:
    """Redis `used_memory` growth per cached 1536-d embedding and per ~2 KB chat completion (the stub answers
    at once and pads its answers to 2048 characters for this)."""
    control = f"{stub_url}/control"
    previous = httpx.post(control, json={}, timeout=5).json()
    httpx.post(control, json={"latency_ms": 0, "chat_chars": 2048}, timeout=5).raise_for_status()
    client = redis.Redis.from_url(redis_url)
    nonce = f"{time.time_ns()}"
    try:
        before = _cache_memory(client)
        batches = [
            embedding_body([f"memory {nonce} embedding {i}" for i in range(start, min(start + 100, embeddings))])
            for start in range(0, embeddings, 100)
        ]
        asyncio.run(_post_all(url, "/v1/embeddings", batches, concurrency=4))
        after_emb = _cache_memory(client)
        chat_bodies = [
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"memory {nonce} question {i}"}]}
            for i in range(chats)
        ]
        asyncio.run(_post_all(url, "/v1/chat/completions", chat_bodies, concurrency=16))
        after_chat = _cache_memory(client)
        emb_usage, emb_len = _sample_key(client, "cache:embedding:school:*")
        chat_usage, chat_len = _sample_key(client, "cache:llm:school:*")
    finally:
        client.close()
        httpx.post(control, json={k: previous[k] for k in ("latency_ms", "chat_chars")}, timeout=5)
    return {
        "embeddings": embeddings,
        "chats": chats,
        "bytes_per_embedding": round((after_emb - before) / embeddings),
        "bytes_per_chat_completion": round((after_chat - after_emb) / chats),
        "sample_embedding_key": {"memory_usage": emb_usage, "value_bytes": emb_len},
        "sample_chat_key": {"memory_usage": chat_usage, "value_bytes": chat_len},
    }


def miss_probe(url: str, stop: threading.Event, *, tag: str, limit: int = 40) -> dict[str, Any]:
    """Until `stop`, about four times a second, ask for a text nobody asked for yet (a miss that needs Redis
    for its lookup, lease and write); their latency in ms and their answers."""
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        for i in range(limit):
            if stop.is_set():
                break
            started = time.monotonic()
            res = client.post("/v1/embeddings", json=embedding_body(f"miss probe {tag} {time.time_ns()} {i}"))
            latencies.append((time.monotonic() - started) * 1000)
            answers[f"{res.status_code} {res.headers.get('x-cache', '-')}"] += 1
            stop.wait(0.25)
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "median_ms": round(ordered[len(ordered) // 2], 1) if ordered else None,
        "max_ms": round(ordered[-1], 1) if ordered else None,
        "answers": dict(answers),
    }
