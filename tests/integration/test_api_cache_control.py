"""Per-request cache control as clients send it, against a real API process and a real redis-server: the
official SDK's `extra_body={"cache": ...}` and a plain `Cache-Control` header set the Redis TTL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from rag_api.cache import tenant_key
from rag_api.request_keys import embedding_key

from tests.support.processes import Stack
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer demo-admin"}
T123 = {"Authorization": "Bearer demo-school-123"}


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # No stale grace, so that an entry's PTTL is exactly its TTL.
    running = Stack(tmp_path_factory.mktemp("cache-control"), redis_server.url, CACHE_STALE_IF_ERROR="0")
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def clean(stack: Stack) -> None:
    httpx.post(stack.url + "/cache/clear", json={"all": True}, headers=ADMIN, timeout=5).raise_for_status()
    stack.stub.reset()


@pytest.fixture
def sdk(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.url + "/v1", api_key="demo-school-123", max_retries=0) as client:
        yield client


def pttl_seconds(redis_server: RedisServer, text: str) -> float:
    with redis_server.client() as r:
        return int(r.pttl(tenant_key("embedding", 123, embedding_key("m", None, text)))) / 1000


def test_sdk_extra_body_ttl_sets_the_redis_ttl(sdk: openai.OpenAI, redis_server: RedisServer) -> None:
    """`extra_body={"cache": {"ttl": 60}}` stores the entry for 60 s; a later plain request is a HIT."""
    res = sdk.embeddings.with_raw_response.create(model="m", input="sdk ttl", extra_body={"cache": {"ttl": 60}})
    assert res.headers["x-cache"] == "MISS"
    assert 58 <= pttl_seconds(redis_server, "sdk ttl") <= 60
    assert sdk.embeddings.with_raw_response.create(model="m", input="sdk ttl").headers["x-cache"] == "HIT"


def test_cache_control_max_age_sets_the_redis_ttl(stack: Stack, redis_server: RedisServer) -> None:
    """`Cache-Control: max-age=60` from a plain HTTP client stores the entry for 60 s."""
    headers = {**T123, "Cache-Control": "max-age=60"}
    res = httpx.post(stack.url + "/v1/embeddings", json={"model": "m", "input": "header ttl"}, headers=headers)
    assert res.status_code == 200
    assert 58 <= pttl_seconds(redis_server, "header ttl") <= 60


def test_sdk_extra_body_directives_and_errors(sdk: openai.OpenAI, stack: Stack) -> None:
    """no-store bypasses the cache through the SDK; an unknown directive is the SDK's BadRequestError."""
    messages = [{"role": "user", "content": "sdk"}]
    for _ in range(2):
        res = sdk.chat.completions.with_raw_response.create(
            model="g", messages=messages, extra_body={"cache": {"no-store": True}}
        )
        assert res.headers["x-cache"] == "BYPASS"
    assert stack.stub.stats()["chat_requests"] == 2
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="g", messages=messages, extra_body={"cache": {"no-cahce": True}})
    assert info.value.code == "invalid_cache_directive"


def test_sdk_namespace_and_targeted_delete(sdk: openai.OpenAI, stack: Stack) -> None:
    """A namespace partitions entries; /cache/delete with the same request drops exactly that entry."""
    ns = {"cache": {"namespace": "eval-run-7"}}
    assert sdk.embeddings.with_raw_response.create(model="m", input="n", extra_body=ns).headers["x-cache"] == "MISS"
    assert sdk.embeddings.with_raw_response.create(model="m", input="n").headers["x-cache"] == "MISS"
    body = {"route": "/v1/embeddings", "request": {"model": "m", "input": "n", **ns}}
    assert httpx.post(stack.url + "/cache/delete", json=body, headers=T123).json() == {"deleted": 1}
    assert sdk.embeddings.with_raw_response.create(model="m", input="n").headers["x-cache"] == "HIT"
    assert sdk.embeddings.with_raw_response.create(model="m", input="n", extra_body=ns).headers["x-cache"] == "MISS"
