"""The official `openai` SDK against a real API process, a real stub process and a real redis-server; also
per-request cache control as clients send it (the SDK's `extra_body={"cache": ...}`, a `Cache-Control` header)."""

from __future__ import annotations

import base64
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from rag_api.cache import tenant_key
from rag_api.request_keys import embedding_key
from upstream_stub import embedding_vector

from tests.support.errors import error_message
from tests.support.processes import Stack
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer demo-admin"}
T123 = {"Authorization": "Bearer demo-school-123"}


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # No stale grace (CACHE_STALE_IF_ERROR=0), so that an entry's Redis PTTL is exactly its TTL.
    running = Stack(tmp_path_factory.mktemp("openai"), redis_server.url, UPSTREAM_TIMEOUT="1", CACHE_STALE_IF_ERROR="0")
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def clean(stack: Stack) -> None:
    """Every test starts with empty caches (Redis and the API's memory tier) and zeroed stub counters."""
    httpx.post(stack.url + "/cache/clear", json={"all": True}, headers=ADMIN, timeout=5).raise_for_status()
    stack.stub.control(latency_ms=0, fail_status=0)
    stack.stub.reset()


@pytest.fixture
def sdk(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.url + "/v1", api_key="demo-school-123", max_retries=0) as client:
        yield client


def test_same_vectors_on_miss_and_hit_in_both_encodings(sdk: openai.OpenAI, stack: Stack) -> None:
    """The SDK's default (base64) and float encodings give the stub's exact vector on MISS and on HIT."""
    expected = embedding_vector("text-embedding-3-small", "the quick brown fox", 1536)
    miss = sdk.embeddings.with_raw_response.create(model="text-embedding-3-small", input="the quick brown fox")
    hit = sdk.embeddings.with_raw_response.create(model="text-embedding-3-small", input="the quick brown fox")
    as_float = sdk.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="the quick brown fox", encoding_format="float"
    )
    as_b64 = sdk.embeddings.create(
        model="text-embedding-3-small", input="the quick brown fox", encoding_format="base64"
    )
    assert (miss.headers["x-cache"], hit.headers["x-cache"], as_float.headers["x-cache"]) == ("MISS", "HIT", "HIT")
    assert hit.headers["x-cache-tier"] in ("memory", "redis")
    assert miss.parse().data[0].embedding == expected
    assert hit.parse().data[0].embedding == expected
    assert as_float.parse().data[0].embedding == expected
    raw = as_b64.data[0].embedding
    assert isinstance(raw, str)
    assert array("f", base64.b64decode(raw)).tolist() == expected
    assert stack.stub.stats()["embedding_requests"] == 1


def test_float_miss_equals_base64_hit(sdk: openai.OpenAI) -> None:
    """A vector first fetched as floats is returned bit-identical as base64 from the cache."""
    first = sdk.embeddings.create(model="m", input="floats first", encoding_format="float")
    second = sdk.embeddings.with_raw_response.create(model="m", input="floats first", encoding_format="base64")
    assert second.headers["x-cache"] == "HIT"
    b64 = second.parse().data[0].embedding
    assert isinstance(b64, str)
    assert array("f", base64.b64decode(b64)).tolist() == first.data[0].embedding


def test_hit_leaves_stub_counters_unchanged(sdk: openai.OpenAI, stack: Stack) -> None:
    """Once cached, embeddings and chat answers are served without any upstream call."""
    sdk.embeddings.create(model="m", input=["one", "two"])
    sdk.chat.completions.create(model="g", messages=[{"role": "user", "content": "hello"}])
    before = stack.stub.stats()
    for _ in range(3):
        sdk.embeddings.create(model="m", input=["one", "two"])
        sdk.chat.completions.create(model="g", messages=[{"role": "user", "content": "hello"}])
    assert (
        stack.stub.stats()
        == before
        == {"embedding_requests": 1, "embedding_inputs": 2, "chat_requests": 1, "chat_streams": 0}
    )


def test_partial_batch_sends_only_the_misses(sdk: openai.OpenAI, stack: Stack) -> None:
    """A batch with cached and new inputs is PARTIAL k/n, in order, and the stub sees only the new inputs."""
    sdk.embeddings.create(model="m", input=["b", "d"])
    stack.stub.reset()
    res = sdk.embeddings.with_raw_response.create(model="m", input=["a", "b", "c", "d", "e"])
    assert res.headers["x-cache"] == "PARTIAL"
    assert res.headers["x-cache-hits"] == "2/5"
    assert [d.embedding for d in res.parse().data] == [embedding_vector("m", t, 1536) for t in "abcde"]
    assert [d.index for d in res.parse().data] == [0, 1, 2, 3, 4]
    assert stack.stub.stats() == {"embedding_requests": 1, "embedding_inputs": 3, "chat_requests": 0, "chat_streams": 0}


def test_chat_miss_then_hit(sdk: openai.OpenAI, stack: Stack) -> None:
    """A chat completion is cached on its canonical key: a changed temperature is a new entry."""
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    miss = sdk.chat.completions.with_raw_response.create(model="g", messages=msgs, temperature=0)
    hit = sdk.chat.completions.with_raw_response.create(model="g", messages=msgs, temperature=0)
    other = sdk.chat.completions.with_raw_response.create(model="g", messages=msgs, temperature=1)
    assert (miss.headers["x-cache"], hit.headers["x-cache"], other.headers["x-cache"]) == ("MISS", "HIT", "MISS")
    assert miss.parse().choices[0].message.content == hit.parse().choices[0].message.content
    assert "2+2?" in (hit.parse().choices[0].message.content or "")
    assert hit.headers["x-instance"] == "test-api"
    assert stack.stub.stats()["chat_requests"] == 2


def test_cache_control(sdk: openai.OpenAI, stack: Stack) -> None:
    """`no-store` neither reads nor writes; `no-cache` skips the read but refreshes the entry."""
    nostore = {"Cache-Control": "no-store"}
    nocache = {"Cache-Control": "no-cache"}
    r1 = sdk.embeddings.with_raw_response.create(model="m", input="cc", extra_headers=nostore)
    r2 = sdk.embeddings.with_raw_response.create(model="m", input="cc")
    r3 = sdk.embeddings.with_raw_response.create(model="m", input="cc", extra_headers=nocache)
    r4 = sdk.embeddings.with_raw_response.create(model="m", input="cc")
    assert [r.headers["x-cache"] for r in (r1, r2, r3, r4)] == ["BYPASS", "MISS", "BYPASS", "HIT"]
    assert stack.stub.stats()["embedding_requests"] == 3


def test_identical_concurrent_requests_share_one_upstream_call(stack: Stack) -> None:
    """Twelve identical concurrent chat requests reach the upstream once."""
    stack.stub.control(latency_ms=300)
    body = {"model": "g", "messages": [{"role": "user", "content": "together"}]}
    headers = {"Authorization": "Bearer demo-school-123"}

    def call(_: int) -> int:
        return httpx.post(stack.url + "/v1/chat/completions", json=body, headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(12) as pool:
        assert set(pool.map(call, range(12))) == {200}
    assert stack.stub.stats()["chat_requests"] == 1


def test_upstream_error_is_502_and_not_cached(sdk: openai.OpenAI, stack: Stack) -> None:
    """An upstream 500 gives a 502 in OpenAI's envelope through the SDK; the failure is remembered for
    CACHE_FAILURE_TTL (answered without asking the model), never cached: then the model is asked again."""
    stack.stub.control(fail_status=500)
    with pytest.raises(openai.InternalServerError) as info:
        sdk.embeddings.create(model="m", input="fails")
    assert info.value.status_code == 502
    assert error_message(info.value.response)
    stack.stub.control(fail_status=0)
    with pytest.raises(openai.InternalServerError):
        sdk.embeddings.create(model="m", input="fails")
    assert stack.stub.stats()["embedding_requests"] == 1

    def answered() -> bool:  # a 502 raises, which wait_until counts as "not yet"
        return sdk.embeddings.with_raw_response.create(model="m", input="fails").headers["x-cache"] == "MISS"

    wait_until(answered, timeout=10, interval=0.2, what="the model asked again after CACHE_FAILURE_TTL")
    assert stack.stub.stats()["embedding_requests"] == 2


def test_upstream_timeout_is_504(stack: Stack) -> None:
    """An upstream slower than UPSTREAM_TIMEOUT (1 s here) gives a 504 JSON error."""
    stack.stub.control(latency_ms=2500)
    res = httpx.post(
        stack.url + "/v1/chat/completions",
        json={"model": "g", "messages": [{"role": "user", "content": "slow"}]},
        headers={"Authorization": "Bearer demo-school-123"},
        timeout=10,
    )
    assert res.status_code == 504
    assert "did not answer" in error_message(res)


def test_a_stream_then_its_plain_twin_is_one_upstream_call(sdk: openai.OpenAI, stack: Stack) -> None:
    """`stream=True` streams (one upstream stream); the same request without it is then a HIT."""
    msgs: list[Any] = [{"role": "user", "content": "stream me"}]
    text = "".join(
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(model="g", messages=msgs, stream=True)
        if c.choices
    )
    plain = sdk.chat.completions.with_raw_response.create(model="g", messages=msgs)
    assert (plain.headers["x-cache"], plain.parse().choices[0].message.content) == ("HIT", text)
    assert stack.stub.stats()["chat_streams"] == 1


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
