"""Redis killed under a running API: requests keep succeeding, health says degraded, then healthy again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.errors import error_message
from tests.support.processes import Stack
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

T123 = {"Authorization": "Bearer demo-school-123"}
CHAT = {"model": "g", "messages": [{"role": "user", "content": "still there?"}]}


def health(api: httpx.Client) -> dict[str, object]:
    res = api.get("/cache/health")
    assert res.status_code == 200
    return dict(res.json())


@pytest.fixture
def api(own_redis: RedisServer, tmp_path: Path) -> Iterator[httpx.Client]:
    stack = Stack(tmp_path / "logs", own_redis.url)
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        yield client
    stack.stop()


def test_requests_survive_redis_death_and_health_recovers(api: httpx.Client, own_redis: RedisServer) -> None:
    """With Redis killed, cached and new requests answer 200 (memory or upstream) and health is degraded."""
    body = {"model": "m", "input": "kept in memory"}
    assert api.post("/v1/embeddings", json=body, headers=T123).headers["x-cache"] == "MISS"
    assert api.post("/v1/chat/completions", json=CHAT, headers=T123).headers["x-cache"] == "MISS"
    assert health(api)["status"] == "healthy"

    own_redis.kill()
    for i in range(30):
        cached = api.post("/v1/embeddings", json=body, headers=T123)
        assert cached.status_code == 200
        assert (cached.headers["x-cache"], cached.headers["x-cache-tier"]) == ("HIT", "memory")
        fresh = api.post("/v1/embeddings", json={"model": "m", "input": f"new while down {i}"}, headers=T123)
        assert fresh.status_code == 200
        assert fresh.headers["x-cache-tier"] in ("memory", "none")
    chat = api.post("/v1/chat/completions", json=CHAT, headers=T123)
    assert (chat.status_code, chat.headers["x-cache-tier"]) == (200, "memory")
    down = health(api)
    assert (down["status"], down["redis_available"]) == ("degraded", False)
    assert api.get("/readyz").status_code == 200
    assert api.get("/cache/stats", headers={"Authorization": "Bearer demo-admin"}).status_code == 200

    own_redis.start()
    restarted = time.monotonic()
    wait_until(lambda: health(api)["status"] == "healthy", timeout=2.0, what="/cache/health healthy again")
    assert time.monotonic() - restarted < 2.0
    after = api.post("/v1/embeddings", json={"model": "m", "input": "after the restart"}, headers=T123)
    assert after.status_code == 200
    wait_until(
        lambda: any(own_redis.client().scan_iter("cache:embedding:school:123:*")),
        timeout=2.0,
        what="writes reach Redis again",
    )


def test_without_fallback_redis_down_is_503(own_redis: RedisServer, tmp_path: Path) -> None:
    """With CACHE_FALLBACK_ENABLED=false, a dead Redis gives 503 JSON on data routes and an unready /readyz."""
    stack = Stack(tmp_path / "logs", own_redis.url, CACHE_FALLBACK_ENABLED="false")
    try:
        with httpx.Client(base_url=stack.url, timeout=10) as api:
            own_redis.kill()
            res = api.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=T123)
            assert res.status_code == 503
            assert "unavailable" in error_message(res)
            assert api.get("/readyz").status_code == 503
            assert health(api)["status"] == "degraded"
            own_redis.start()
            wait_until(lambda: api.get("/readyz").status_code == 200, timeout=2.0, what="ready again")
    finally:
        stack.stop()
