"""The API app in-process: the stub over ASGI as upstream, fakeredis behind the cache, no network."""

from __future__ import annotations

import base64
from array import array
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import httpx2
import pytest
from rag_api.app import create_app
from rag_api.routes.chat import chat_key
from upstream_stub import create_app as create_stub
from upstream_stub import embedding_vector
from upstream_stub.app import StubState

from tests.support.errors import error_message
from tests.support.inprocess import ADMIN, T123, T456, Api, make_settings, open_api


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with open_api() as running:
        yield running


def floats(item: dict[str, Any]) -> list[float]:
    emb = item["embedding"]
    return array("f", base64.b64decode(emb)).tolist() if isinstance(emb, str) else list(emb)


async def test_embeddings_miss_then_hit_same_vectors(api: Api) -> None:
    """A repeated input is a HIT from memory, answers the stub's vector, and does not call the stub again."""
    body = {"model": "m", "input": "hello"}
    first = await api.client.post("/v1/embeddings", json=body, headers=T123)
    second = await api.client.post("/v1/embeddings", json={**body, "encoding_format": "base64"}, headers=T123)
    assert (first.headers["x-cache"], first.headers["x-cache-tier"]) == ("MISS", "none")
    assert (second.headers["x-cache"], second.headers["x-cache-tier"]) == ("HIT", "memory")
    assert first.headers["x-instance"] == "unit"
    assert floats(first.json()["data"][0]) == floats(second.json()["data"][0]) == embedding_vector("m", "hello", 8)
    assert api.stub.embedding_requests == 1


async def test_partial_batch_sends_only_misses(api: Api) -> None:
    """A mixed batch says PARTIAL k/n, keeps the input order and sends only the misses upstream."""
    await api.client.post("/v1/embeddings", json={"model": "m", "input": ["b", "d"]}, headers=T123)
    api.stub.embedding_inputs = 0
    res = await api.client.post("/v1/embeddings", json={"model": "m", "input": ["a", "b", "c", "d"]}, headers=T123)
    assert res.headers["x-cache"] == "PARTIAL"
    assert res.headers["x-cache-hits"] == "2/4"
    assert api.stub.embedding_inputs == 2
    assert [floats(d) for d in res.json()["data"]] == [embedding_vector("m", t, 8) for t in "abcd"]


async def test_entries_are_stored_per_school_in_redis(api: Api) -> None:
    """Redis keys carry the school, and another school's identical request is a MISS."""
    body = {"model": "m", "input": "shared text"}
    await api.client.post("/v1/embeddings", json=body, headers=T123)
    other = await api.client.post("/v1/embeddings", json=body, headers=T456)
    assert other.headers["x-cache"] == "MISS"
    keys = fakeredis.FakeRedis(server=api.redis).keys("cache:embedding:school:*")
    assert {k.decode().split(":")[3] for k in keys} == {"123", "456"}


async def test_chat_hit_and_cache_control(api: Api) -> None:
    """Chat answers are cached; no-cache skips the read but writes, no-store neither reads nor writes."""
    body = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
    first = await api.client.post("/v1/chat/completions", json=body, headers=T123)
    hit = await api.client.post("/v1/chat/completions", json=body, headers=T123)
    assert (first.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert first.json() == hit.json()
    no_store = await api.client.post("/v1/chat/completions", json=body, headers={**T123, "Cache-Control": "no-store"})
    assert no_store.headers["x-cache"] == "BYPASS"
    assert api.stub.chat_requests == 2
    other = {**body, "temperature": 0.7}
    await api.client.post("/v1/chat/completions", json=other, headers={**T123, "Cache-Control": "no-cache"})
    assert (await api.client.post("/v1/chat/completions", json=other, headers=T123)).headers["x-cache"] == "HIT"
    assert api.stub.chat_requests == 3


def test_chat_key_ignores_order_nulls_and_user() -> None:
    """The canonical key ignores key order, absent-vs-null and the `user` field, but not the temperature."""
    a = chat_key({"model": "g", "messages": [{"role": "user", "content": "x"}], "temperature": 0.0})
    b = chat_key({"temperature": 0.0, "messages": [{"content": "x", "role": "user"}], "model": "g", "user": "u"})
    c = chat_key({"model": "g", "messages": [{"role": "user", "content": "x"}], "temperature": 1.0})
    assert a == b
    assert a != c


async def test_upstream_failure_is_502_and_not_cached() -> None:
    """An upstream 500 answers 502 JSON, and (failures not remembered) the next request calls the upstream again."""
    async with open_api(cache_failure_ttl=0) as api:
        api.stub.fail_status = 500
        body = {"model": "m", "input": "boom"}
        res = await api.client.post("/v1/embeddings", json=body, headers=T123)
        assert res.status_code == 502
        assert error_message(res)
        api.stub.fail_status = 0
        again = await api.client.post("/v1/embeddings", json=body, headers=T123)
        assert (again.status_code, again.headers["x-cache"]) == (200, "MISS")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "m", "input": []}, 400),
        ({"model": "m", "input": ""}, 400),
        ({"model": "m", "input": ["x"] * 9}, 400),
        ({"model": "m", "input": "x" * 101}, 400),
        ({"model": "m", "input": "a", "encoding_format": "int8"}, 422),
        ({"model": "", "input": "a"}, 422),
        ({"input": "a"}, 422),
        ('{"model": "m", "input": "\\ud800"}', 400),
        ('{"model": "m", "input": ', 422),
        ("not json", 422),
        ({"model": "m", "input": [[1, -2]]}, 422),
    ],
)
async def test_embedding_bad_input_is_4xx_json(api: Api, body: dict[str, Any] | str, status: int) -> None:
    """Invalid embedding requests are refused with the right 4xx and a JSON detail."""
    headers = {**T123, "Content-Type": "application/json"}
    if isinstance(body, str):
        res = await api.client.post("/v1/embeddings", content=body.encode(), headers=headers)
    else:
        res = await api.client.post("/v1/embeddings", json=body, headers=headers)
    assert res.status_code == status, res.text
    assert error_message(res)


async def test_body_too_large_is_413(api: Api) -> None:
    """A body over MAX_REQUEST_BYTES is refused with 413, declared or streamed."""
    big = {"model": "m", "input": "x" * 30_000}
    assert (await api.client.post("/v1/embeddings", json=big, headers=T123)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(30):
            yield b" " * 1000

    streamed = await api.client.post("/v1/embeddings", content=chunks(), headers=T123)
    assert streamed.status_code == 413
    assert error_message(streamed)


async def test_a_stream_is_server_sent_events_ending_in_done(api: Api) -> None:
    """`stream: true` answers OpenAI's SSE (chunks, then `data: [DONE]`) with the cache headers."""
    body = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    res = await api.client.post("/v1/chat/completions", json=body, headers=T123)
    assert (res.status_code, res.headers["x-cache"]) == (200, "MISS")
    assert res.headers["content-type"].startswith("text/event-stream")
    events = [e for e in res.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    again = await api.client.post("/v1/chat/completions", json=body, headers=T123)
    assert again.headers["x-cache"] == "HIT"
    assert api.stub.chat_streams == 1


async def test_health_stats_clear(api: Api) -> None:
    """The cache routes answer: healthy with Redis up, figures in stats (admin key only), a tenant clears its
    school only."""
    health = (await api.client.get("/cache/health")).json()
    assert health["status"] == "healthy"
    assert health["instance"] == "unit"
    await api.client.post("/v1/embeddings", json={"model": "m", "input": "z"}, headers=T123)
    await api.client.post("/v1/embeddings", json={"model": "m", "input": "z"}, headers=T456)
    cleared = (await api.client.post("/cache/clear", headers=T123)).json()
    assert cleared["school_id"] == 123
    res = await api.client.post("/v1/embeddings", json={"model": "m", "input": "z"}, headers=T456)
    assert res.headers["x-cache"] == "HIT"
    assert (await api.client.get("/readyz")).status_code == 200
    # Last: fakeredis has no INFO command, which the cache counts as a Redis failure.
    assert (await api.client.get("/cache/stats", headers=T123)).status_code == 403
    stats = (await api.client.get("/cache/stats", headers=ADMIN)).json()
    assert stats["embedding"]["misses"] >= 2
    assert b"rag_http_requests_total" in (await api.client.get("/metrics")).content


async def test_azure_upstream_uses_deployment_paths() -> None:
    """With AZURE_OPENAI_API_VERSION set, the API reaches the upstream through Azure's deployment paths."""
    settings = make_settings(
        redis_enabled=False, upstream_base_url="http://stub", azure_openai_api_version="2024-06-01"
    )
    stub_state = StubState(latency_ms=0, dim=8)
    seen: list[str] = []

    async def record(request: httpx2.Request) -> None:
        seen.append(request.url.path)

    upstream = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_stub(stub_state)), event_hooks={"request": [record]}
    )
    app = create_app(settings, upstream_http_client=upstream)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://a") as client:
        emb = await client.post("/v1/embeddings", json={"model": "emb-dep", "input": "a"}, headers=T123)
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "chat-dep", "messages": [{"role": "user", "content": "hi"}]},
            headers=T123,
        )
    assert (emb.status_code, chat.status_code) == (200, 200)
    assert seen == ["/openai/deployments/emb-dep/embeddings", "/openai/deployments/chat-dep/chat/completions"]
    assert floats(emb.json()["data"][0]) == embedding_vector("emb-dep", "a", 8)


async def test_duplicate_inputs_are_fetched_once(api: Api) -> None:
    """A batch repeating an input answers every position and asks the upstream for each distinct input once."""
    res = await api.client.post("/v1/embeddings", json={"model": "m", "input": ["a", "b", "a", "a"]}, headers=T123)
    assert [floats(d) for d in res.json()["data"]] == [embedding_vector("m", t, 8) for t in "abaa"]
    assert (api.stub.embedding_requests, api.stub.embedding_inputs) == (1, 2)
