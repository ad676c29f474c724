"""Prewarm: a replica that starts fills its memory tier from Redis with the entries used most recently, so a
rolling restart keeps answering from memory instead of turning every hit into a Redis read.

"Hottest" is what Redis can say cheaply: `OBJECT IDLETIME` (seconds since last access; the stack runs
`allkeys-lru`, which keeps that clock). Keys are found with SCAN over the cache's prefix, bounded by a key
count, a time budget and a byte budget; entries are adopted through the read rule (`CoherentMemory.accept`),
so an invalidation that arrives meanwhile wins. Best effort: any Redis error ends it quietly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis

from ._coherence import CoherentMemory
from ._errors import CacheBackendError
from ._keys import cache_prefix
from ._redis import RedisTier, translate_errors

__all__ = ["PrewarmReport", "prewarm_memory"]

_SCAN_COUNT = 1000
_BATCH = 200


@dataclass(slots=True)
class PrewarmReport:
    scanned: int = 0
    loaded: int = 0
    bytes: int = 0
    seconds: float = 0.0
    stopped: str = "done"  # done | time | bytes | entries | redis | unsubscribed


async def prewarm_memory(
    coherent: CoherentMemory, tier: RedisTier, cache_name: str, *, seconds: float, max_bytes: int
) -> PrewarmReport:
    """Adopt the most recently used entries of `cache_name` into memory within `seconds` and `max_bytes`."""
    started = time.monotonic()
    deadline = started + seconds
    report = PrewarmReport()
    # Entries adopted before the invalidation subscription is live would be dropped by it (memory is cleared
    # when the first subscription opens), so wait for it within the budget.
    while not coherent.subscribed:
        if time.monotonic() >= deadline:
            report.stopped = "unsubscribed"
            return report
        await asyncio.sleep(0.01)
    max_entries = coherent.memory.max_entries
    try:
        keys = await _scan(tier, cache_prefix(cache_name), limit=4 * max_entries, deadline=deadline)
        report.scanned = len(keys)
        keys = await _hottest_first(tier, keys, deadline)
        for i in range(0, len(keys), _BATCH):
            if time.monotonic() >= deadline:
                report.stopped = "time"
                break
            batch = keys[i : i + _BATCH]
            generation = coherent.generation
            with translate_errors():
                datas = await tier.client().mget(batch)
            for full, data in zip(batch, datas, strict=True):
                if not isinstance(data, bytes):  # gone since the scan (no decode_responses: bytes otherwise)
                    continue
                if report.bytes + len(data) > max_bytes:
                    report.stopped = "bytes"
                    break
                if coherent.accept(full, data, generation) is not None:
                    report.loaded += 1
                    report.bytes += len(data)
                if report.loaded >= max_entries:
                    report.stopped = "entries"
                    break
            if report.stopped != "done":
                break
    except CacheBackendError:
        report.stopped = "redis"
    report.seconds = round(time.monotonic() - started, 3)
    return report


async def _scan(tier: RedisTier, prefix: str, *, limit: int, deadline: float) -> list[str]:
    found: list[str] = []
    with translate_errors():
        async for raw in tier.client().scan_iter(match=prefix + "*", count=_SCAN_COUNT):
            found.append(raw.decode() if isinstance(raw, bytes) else raw)
            if len(found) >= limit or time.monotonic() >= deadline:
                break
    return found


async def _hottest_first(tier: RedisTier, keys: list[str], deadline: float) -> list[str]:
    """Keys by idle time, shortest first; in scan order when Redis cannot say (an LFU policy, a cluster)."""
    idle: list[tuple[int, str]] = []
    try:
        for i in range(0, len(keys), _BATCH):
            if time.monotonic() >= deadline:
                break
            batch = keys[i : i + _BATCH]
            async with tier.client().pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.object("idletime", key)
                answers = await pipe.execute(raise_on_error=False)
            idle += [(a if isinstance(a, int) else 1 << 40, k) for a, k in zip(answers, batch, strict=True)]
    except (redis.RedisError, OSError, TimeoutError):
        return keys
    ranked = [k for _, k in sorted(idle)]
    return ranked + keys[len(ranked) :]
