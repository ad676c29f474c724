"""Redis down behind a name whose lookups hang (as Docker's DNS answers for a stopped container): the API
keeps answering misses from a working model, because Redis lookups never take the threads that the model
client's own lookups need (see rag_api/cache/_resolver.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from rag_api.app import create_app

from tests.support.inprocess import T123, make_settings
from tests.support.processes import StubProcess

pytestmark = pytest.mark.integration

SLOW_HOST = "redis.slow.test"
LOAD_SECONDS = 10.0


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubProcess]:
    process = StubProcess(tmp_path, latency_ms=5, dim=8)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def hanging_redis_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """socket.getaddrinfo hangs for the Redis host (answers only when the test ends) and works for others."""
    real = socket.getaddrinfo
    release = threading.Event()
    asked: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == SLOW_HOST:
            asked.append(host)
            release.wait(30)
            raise socket.gaierror("no answer")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    release.set()


async def test_misses_keep_answering_while_redis_lookups_hang(
    stub: StubProcess, hanging_redis_lookups: list[str]
) -> None:
    """10 s of misses (8 at a time, every upstream call on a new connection, so each looks `localhost` up)
    with Redis unresolvable: every request answers 200, and Redis lookups never pile up."""
    settings = make_settings(
        redis_url=f"redis://{SLOW_HOST}:6379/0",
        upstream_base_url=f"http://localhost:{stub.port}/v1",
        upstream_timeout=5,
        cache_breaker_probe_interval=0.25,
    )
    upstream = httpx2.AsyncClient(limits=httpx2.Limits(max_keepalive_connections=0))
    app = create_app(settings, upstream_http_client=upstream)
    statuses: dict[int, int] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as client:
            deadline = time.monotonic() + LOAD_SECONDS

            async def user(n: int) -> None:
                i = 0
                while time.monotonic() < deadline:
                    body = {"model": "m", "input": f"miss {n} {i}"}
                    res = await client.post("/v1/embeddings", json=body, headers=T123)
                    statuses[res.status_code] = statuses.get(res.status_code, 0) + 1
                    i += 1

            await asyncio.gather(*(user(n) for n in range(8)))
    await upstream.aclose()
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 100
    assert len(hanging_redis_lookups) <= 2  # one lookup hangs; nobody starts another behind it
