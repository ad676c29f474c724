"""When the model fails: mapped statuses in OpenAI's envelope, stale-if-error, the model's circuit breaker,
one deadline per request, and a failure shared with the replicas waiting for the same key (in-process apps
over one fakeredis server; the stub over ASGI)."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fakeredis
import httpx2
import openai
import orjson
import pytest
from rag_api.cache import tenant_key
from rag_api.cache._keys import failure_key, lease_key
from rag_api.cache._serialization import encode
from rag_api.routes.embeddings import embedding_key
from upstream_stub import embedding_vector
from upstream_stub.app import StubState

from tests.support.errors import error_message
from tests.support.inprocess import T123, Api, open_api
from tests.support.wait import wait_until_async

BODY = {"model": "m", "input": "hello"}


def sdk(api: Api) -> openai.AsyncOpenAI:
    """The official SDK as the client, over ASGI, without its own retries (they would hide our answer)."""
    transport = httpx2.ASGITransport(app=api.app)
    http = httpx2.AsyncClient(transport=transport, base_url="http://api/v1")
    return openai.AsyncOpenAI(api_key="demo-school-123", base_url="http://api/v1", http_client=http, max_retries=0)


@pytest.mark.parametrize(
    ("fail_status", "status", "sdk_error"),
    [
        (500, 502, openai.InternalServerError),
        (503, 502, openai.InternalServerError),
        (429, 429, openai.RateLimitError),
        (400, 400, openai.BadRequestError),
        (404, 404, openai.NotFoundError),
    ],
)
async def test_model_errors_map_to_openai_errors(fail_status: int, status: int, sdk_error: type[Exception]) -> None:
    """A model error reaches the client with the mapped status in OpenAI's envelope; the SDK raises its class."""
    async with open_api() as api:
        api.stub.fail_status = fail_status
        res = await api.client.post("/v1/embeddings", json=BODY, headers=T123)
        assert res.status_code == status
        assert "injected failure" in error_message(res)
        if status == 429:
            assert res.headers["retry-after"] == "1"
            assert res.json()["error"]["type"] == "rate_limit_error"
        with pytest.raises(sdk_error):
            await sdk(api).embeddings.create(model="m", input="another")


async def test_an_unreachable_model_is_502() -> None:
    """Connection refused is a 502 with its own code (the slow model's 504 needs real sockets: see
    tests/integration/test_model_failures.py)."""

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    refused = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))
    async with open_api(upstream=refused) as api:
        res = await api.client.post("/v1/embeddings", json=BODY, headers=T123)
        assert res.status_code == 502
        assert res.json()["error"]["code"] == "upstream_unreachable"
        assert "could not be reached" in error_message(res)


async def test_an_expired_entry_is_served_stale_when_the_model_fails() -> None:
    """Past its TTL but within CACHE_STALE_IF_ERROR, an entry answers with X-Cache: STALE when recomputing
    fails; it counts as a miss (the model is asked) while the model works."""
    async with open_api(cache_failure_ttl=0) as api:
        await _store_expired(api, "hello", [0.5] * 8)
        api.stub.fail_status = 500
        res = await api.client.post("/v1/embeddings", json=BODY, headers=T123)
        assert (res.status_code, res.headers["x-cache"]) == (200, "STALE")
        assert res.json()["data"][0]["embedding"] == [0.5] * 8
        assert api.stub.embedding_requests == 1
        api.stub.fail_status = 0
        fresh = await api.client.post("/v1/embeddings", json=BODY, headers=T123)
        assert (fresh.status_code, fresh.headers["x-cache"]) == (200, "MISS")
        assert fresh.json()["data"][0]["embedding"] == pytest.approx(embedding_vector("m", "hello", 8))
        assert api.embeddings.stats()["stale_served"] == 1


async def test_without_a_grace_an_expired_entry_is_an_error() -> None:
    """With CACHE_STALE_IF_ERROR=0, a failed recompute of an expired entry is the mapped error."""
    async with open_api(cache_stale_if_error=0) as api:
        await _store_expired(api, "hello", [0.5] * 8)
        api.stub.fail_status = 500
        res = await api.client.post("/v1/embeddings", json=BODY, headers=T123)
        assert res.status_code == 502


async def test_the_breaker_opens_fails_fast_and_closes_after_a_probe() -> None:
    """After UPSTREAM_BREAKER_THRESHOLD failures, misses fail fast without calling the model; after the
    cool-down one probe goes through, and its success closes the breaker."""
    now = [1000.0]
    async with open_api(upstream_breaker_threshold=2, upstream_breaker_cooldown=5, cache_failure_ttl=0) as api:
        api.app.state.services.upstream.breakers.clock = lambda: now[0]
        api.stub.fail_status = 500
        for i in range(2):
            assert (await _embed(api, f"k{i}")).status_code == 502
        fast = await _embed(api, "k2")
        assert fast.status_code == 502
        assert fast.headers["retry-after"] == "5"
        assert "circuit open" in error_message(fast)
        assert api.stub.embedding_requests == 2
        stats = (await api.client.get("/cache/stats", headers={"Authorization": "Bearer demo-admin"})).json()
        assert stats["upstream"]["breakers"]["m"]["state"] == "open"
        api.stub.fail_status = 0
        now[0] += 5.1
        assert (await _embed(api, "k3")).status_code == 200  # the probe
        assert (await _embed(api, "k4")).status_code == 200
        assert api.stub.embedding_requests == 4


async def test_a_model_429_opens_the_breaker_for_its_retry_after() -> None:
    """A rate-limited model keeps answering 429 with Retry-After from the breaker, never calling it sooner."""
    now = [1000.0]
    async with open_api(upstream_breaker_threshold=1, upstream_breaker_cooldown=1, cache_failure_ttl=0) as api:
        api.app.state.services.upstream.breakers.clock = lambda: now[0]
        api.stub.fail_status, api.stub.retry_after = 429, 7
        assert (await _embed(api, "a")).status_code == 429
        fast = await _embed(api, "b")
        assert (fast.status_code, fast.headers["retry-after"]) == (429, "7")
        now[0] += 3
        assert (await _embed(api, "c")).status_code == 429
        assert api.stub.embedding_requests == 1


async def test_lease_wait_and_model_call_share_one_deadline() -> None:
    """A request that waits on a peer's lease and then calls a slow model answers 504 when REQUEST_TIMEOUT
    runs out, not after the lease wait plus a whole UPSTREAM_TIMEOUT."""
    settings: dict[str, Any] = {"request_timeout": 1.0, "upstream_timeout": 1.0, "cache_lease_wait": 0.5}
    async with open_api(stub=StubState(latency_ms=3000, dim=8), **settings) as api:
        full = tenant_key("embedding", 123, embedding_key("m", None, "hello"))
        fakeredis.FakeRedis(server=api.redis).set(lease_key(full), "a-peer", px=10_000)
        started = time.monotonic()
        res = await api.client.post("/v1/embeddings", json=BODY, headers=T123)
        elapsed = time.monotonic() - started
        assert res.status_code == 504
        assert 0.9 < elapsed < 1.4
        assert api.stub.embedding_requests == 1


async def test_waiters_receive_the_leaders_failure() -> None:
    """Two replicas, one key: the one waiting on the other's lease receives its failure instead of calling
    the model itself, and a request in the next moments gets it too; one model call in all."""
    server = fakeredis.FakeServer()
    stub = StubState(latency_ms=300, dim=8, fail_status=500)
    async with _replicas(server, stub) as (a, b):
        first = asyncio.create_task(a.client.post("/v1/embeddings", json=BODY, headers=T123))
        await _until(lambda: stub.embedding_requests == 1)
        waiter = await b.client.post("/v1/embeddings", json=BODY, headers=T123)
        leader = await first
        assert (leader.status_code, waiter.status_code) == (502, 502)
        assert "injected failure" in error_message(waiter)
        later = await b.client.post("/v1/embeddings", json=BODY, headers=T123)
        assert later.status_code == 502
        assert stub.embedding_requests == 1
        assert b.embeddings.stats()["failures_shared"] >= 1


async def test_a_remembered_failure_is_never_a_value() -> None:
    """The failure marker lives CACHE_FAILURE_TTL in Redis, beside the key, which stays empty."""
    server = fakeredis.FakeServer()
    async with _replicas(server, StubState(latency_ms=0, dim=8, fail_status=503)) as (a, _):
        assert (await a.client.post("/v1/embeddings", json=BODY, headers=T123)).status_code == 502
        full = tenant_key("embedding", 123, embedding_key("m", None, "hello"))
        redis = fakeredis.FakeRedis(server=server)
        assert redis.get(full) is None
        assert 0 < redis.pttl(failure_key(full)) <= 2000
        assert orjson.loads(redis.get(failure_key(full)) or b"{}")["status"] == 502


@asynccontextmanager
async def _replicas(server: fakeredis.FakeServer, stub: StubState) -> AsyncIterator[tuple[Api, Api]]:
    async with open_api(server=server, stub=stub) as a, open_api(server=server, stub=stub) as b:
        for api in (a, b):  # subscribed to invalidations, as a replica is once started
            await _until(lambda api=api: api.embeddings.stats()["coherent"])
        yield a, b


async def _embed(api: Api, text: str) -> Any:
    return await api.client.post("/v1/embeddings", json={"model": "m", "input": text}, headers=T123)


async def _store_expired(api: Api, text: str, vector: list[float]) -> None:
    """An entry as Redis holds it after its TTL, within the grace: the envelope's expiry in the past."""
    full = tenant_key("embedding", 123, embedding_key("m", None, text))
    data = encode(array("f", vector), expires_at=time.time() - 60)
    fakeredis.FakeRedis(server=api.redis).set(full, data, px=3_600_000)


async def _until(condition: Any) -> None:
    async def holds() -> bool:
        return bool(condition())

    await wait_until_async(holds, timeout=5)
