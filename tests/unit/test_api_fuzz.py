"""Property test: whatever body, headers or query a client sends, the API never answers 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rag_api.app import create_app
from rag_api.config import Settings
from upstream_stub import create_app as create_stub
from upstream_stub.app import StubState

from tests.support.errors import error_body

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=30)
tokens = st.lists(st.integers(min_value=-5, max_value=2**33), max_size=5)
emb_inputs = st.one_of(texts, st.lists(texts, max_size=6), tokens, st.lists(tokens, max_size=3), json_values)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", ""]) | json_values},
        optional={"content": texts | json_values, "name": texts},
    ),
    max_size=4,
)
# Well-formed requests with odd values reach the cache and the upstream; wild ones test validation.
good_embedding_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["m", "m/2", "ä"]),
        "input": st.text(min_size=1, max_size=40) | st.lists(texts, max_size=5),
    },
    optional={"encoding_format": st.sampled_from(["float", "base64"]), "dimensions": st.integers(1, 64)},
)
good_chat_bodies = st.fixed_dictionaries(
    {
        "model": st.just("g"),
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.just("user"), "content": texts}), min_size=1, max_size=3
        ),
    },
    optional={
        "temperature": st.floats(0, 2),
        "seed": st.integers(0, 10),
        "tools": json_values,
        "metadata": json_values,
    },
)
wild_embedding_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["m", "text-embedding-3-small"]) | texts | json_values,
        "input": emb_inputs,
        "encoding_format": st.sampled_from(["float", "base64", "int8"]) | json_values,
        "dimensions": st.integers(min_value=-2, max_value=70_000) | json_values,
        "user": texts | json_values,
    },
)
wild_chat_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.just("g") | texts | json_values,
        "messages": messages | json_values,
        "temperature": st.floats(allow_nan=True) | json_values,
        "top_p": st.floats(min_value=-1, max_value=2) | json_values,
        "max_tokens": st.integers() | json_values,
        "seed": st.integers() | json_values,
        "stream": st.booleans() | json_values,
        "tools": json_values,
        "response_format": json_values,
        "n": st.integers(min_value=-1, max_value=200),
        "stop": json_values,
        "extra": json_values,
    },
)
embedding_bodies = good_embedding_bodies | wild_embedding_bodies
chat_bodies = good_chat_bodies | wild_chat_bodies
keys = ["Bearer demo-school-123", "Bearer demo-school-456", "Bearer demo-admin", "Bearer nope", "Basic x", ""]
headers = st.fixed_dictionaries(
    {
        "Authorization": st.sampled_from(keys[:1] * 6 + keys),
        "Content-Type": st.sampled_from(["application/json"] * 6 + ["text/plain", "application/x-www-form-urlencoded"]),
    },
    optional={
        "X-School-Id": st.sampled_from(["123", "456", "0", "-1", "abc", "9" * 30, " 123 ", "١٢٣"]),
        "Cache-Control": st.sampled_from(["no-cache", "no-store", "max-age=0, no-cache", "bogus", ""]),
    },
)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    conf = Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_enabled=False,
        upstream_base_url="http://stub/v1",
        max_batch_size=4,
        max_input_chars=64,
        max_request_bytes=4096,
        log_level="error",
    )
    upstream = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_stub(StubState(latency_ms=0, dim=4))))
    with TestClient(create_app(conf, upstream_http_client=upstream), raise_server_exceptions=False) as c:
        yield c


def as_bytes(hdrs: dict[str, str]) -> dict[str, bytes]:
    return {k: v.encode() for k, v in hdrs.items()}


def check(res: Any) -> None:
    event(f"status {res.status_code}")  # shown by --hypothesis-show-statistics: the fuzz reaches 200s too
    assert res.status_code < 500, (res.status_code, res.text)
    if res.status_code >= 400:
        error_body(str(res.request.url.path), res.content)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=embedding_bodies, hdrs=headers)
def test_embeddings_never_500(client: TestClient, body: dict[str, Any], hdrs: dict[str, str]) -> None:
    """Any JSON body and headers on /v1/embeddings get a 2xx or a 4xx JSON answer."""
    check(client.post("/v1/embeddings", content=json.dumps(body).encode(), headers=as_bytes(hdrs)))


@FUZZ
@given(body=chat_bodies, hdrs=headers)
def test_chat_never_500(client: TestClient, body: dict[str, Any], hdrs: dict[str, str]) -> None:
    """Any JSON body and headers on /v1/chat/completions get a 2xx or a 4xx JSON answer."""
    check(client.post("/v1/chat/completions", content=json.dumps(body).encode(), headers=as_bytes(hdrs)))


@FUZZ
@given(
    path=st.sampled_from(["/v1/embeddings", "/v1/chat/completions", "/cache/clear", "/cache/stats", "/nowhere"]),
    raw=st.binary(max_size=300) | st.text(max_size=100).map(str.encode),
    query=st.sampled_from(["", "?cache=llm", "?cache=nope", "?cache=", "?x=%ff"]),
    hdrs=headers,
)
def test_raw_bodies_never_500(client: TestClient, path: str, raw: bytes, query: str, hdrs: dict[str, str]) -> None:
    """Undecodable or non-JSON bodies, odd queries and unknown paths never cause a 500."""
    check(client.post(path + query, content=raw, headers=as_bytes(hdrs)))
