"""A process that holds one CacheManager and obeys JSON-line commands on stdin (one answer line per command).

Run as `python -m tests.support.cache_worker`; configured from the environment like the API (REDIS_URL, ...).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
from rag_api.cache import build_cache
from rag_api.config import Settings


async def main() -> None:
    cache = build_cache("embedding", Settings())
    await cache.start()
    computes = 0
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def compute_after(seconds: float, value: Any) -> Any:
        nonlocal computes
        computes += 1
        await asyncio.sleep(seconds)
        return value

    async def handle(cmd: dict[str, Any]) -> Any:
        op, school = cmd["op"], cmd.get("school", 1)
        if op == "set":
            return await cache.set(cmd["key"], cmd["value"], school_id=school)
        if op == "get":
            found = await cache.lookup(cmd["key"], school_id=school)
            return None if found is None else {"value": found.value, "tier": found.tier}
        if op == "clear":
            return await cache.clear(school_id=school)
        if op == "burst":  # n concurrent get_or_compute calls over `keys`, each compute taking `seconds`
            keys, seconds = cmd["keys"], cmd["seconds"]

            async def one(key: str) -> Any:
                return await cache.get_or_compute(key, lambda: compute_after(seconds, key), school_id=school)

            return await asyncio.gather(*(one(keys[i % len(keys)]) for i in range(cmd["n"])))
        if op == "computes":
            return computes
        if op == "stats":
            return cache.stats()
        raise ValueError(f"unknown op {op!r}")

    while line := await reader.readline():
        cmd = orjson.loads(line)
        try:
            answer = {"ok": True, "result": await handle(cmd)}
        except Exception as exc:  # report, keep serving
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.buffer.write(orjson.dumps(answer) + b"\n")
        sys.stdout.buffer.flush()
    await cache.aclose()


if __name__ == "__main__":
    asyncio.run(main())
