"""The upstream stub: deterministic float32 unit vectors, OpenAI-shaped answers, counters, Azure paths."""

from __future__ import annotations

import base64
import math
from array import array
from collections.abc import AsyncIterator

import httpx
import pytest
from upstream_stub import create_app, embedding_bytes, embedding_vector
from upstream_stub.app import StubState


@pytest.fixture
async def stub() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(StubState(latency_ms=0, dim=64))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stub") as client:
        yield client


def test_vectors_are_deterministic_unit_float32() -> None:
    """The same (model, text) gives the same unit vector whose components are exact float32 values."""
    vec = embedding_vector("m", "hello", 1536)
    assert vec == embedding_vector("m", "hello", 1536)
    assert vec != embedding_vector("m", "hello!", 1536)
    assert vec != embedding_vector("other", "hello", 1536)
    assert len(vec) == 1536
    assert math.isclose(math.fsum(v * v for v in vec), 1.0, rel_tol=1e-5)
    assert array("f", vec).tolist() == vec
    assert array("f", embedding_bytes("m", "hello", 1536)).tolist() == vec


async def test_embeddings_float_and_base64_agree(stub: httpx.AsyncClient) -> None:
    """The base64 answer is the little-endian float32 bytes of the float answer."""
    body = {"model": "m", "input": ["a", "b"]}
    floats = (await stub.post("/v1/embeddings", json=body)).json()
    b64 = (await stub.post("/v1/embeddings", json={**body, "encoding_format": "base64"})).json()
    assert [d["index"] for d in floats["data"]] == [0, 1]
    for f, b in zip(floats["data"], b64["data"], strict=True):
        assert array("f", base64.b64decode(b["embedding"])).tolist() == f["embedding"]
        assert len(f["embedding"]) == 64
    assert floats["object"] == "list"
    assert floats["usage"]["prompt_tokens"] >= 1


async def test_counters_count_and_reset(stub: httpx.AsyncClient) -> None:
    """`/stats` counts requests and inputs; `/stats/reset` zeroes them."""
    await stub.post("/v1/embeddings", json={"model": "m", "input": ["a", "b", "c"]})
    await stub.post("/v1/embeddings", json={"model": "m", "input": "a"})
    await stub.post("/v1/chat/completions", json={"model": "g", "messages": [{"role": "user", "content": "hi"}]})
    assert (await stub.get("/stats")).json() == {
        "embedding_requests": 2,
        "embedding_inputs": 4,
        "chat_requests": 1,
        "chat_streams": 0,
    }
    await stub.post("/stats/reset")
    assert (await stub.get("/stats")).json() == {
        "embedding_requests": 0,
        "embedding_inputs": 0,
        "chat_requests": 0,
        "chat_streams": 0,
    }


async def test_chat_is_deterministic_and_openai_shaped(stub: httpx.AsyncClient) -> None:
    """The same chat request gets the same answer text, in the OpenAI response shape."""
    body = {"model": "g", "messages": [{"role": "user", "content": "what is 2+2?"}], "temperature": 0}
    one = (await stub.post("/v1/chat/completions", json=body)).json()
    two = (await stub.post("/v1/chat/completions", json=body)).json()
    other = (await stub.post("/v1/chat/completions", json={**body, "temperature": 1})).json()
    assert one["object"] == "chat.completion"
    assert one["choices"][0]["message"]["content"] == two["choices"][0]["message"]["content"]
    assert one["choices"][0]["message"]["content"] != other["choices"][0]["message"]["content"]
    assert "what is 2+2?" in one["choices"][0]["message"]["content"]


async def test_azure_deployment_paths(stub: httpx.AsyncClient) -> None:
    """Azure-style deployment paths answer like the /v1 ones."""
    emb = await stub.post(
        "/openai/deployments/dep/embeddings?api-version=2024-06-01", json={"model": "m", "input": "a"}
    )
    chat = await stub.post(
        "/openai/deployments/dep/chat/completions?api-version=2024-06-01",
        json={"model": "g", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert emb.status_code == 200
    assert chat.status_code == 200


async def test_bad_requests_and_injected_failures(stub: httpx.AsyncClient) -> None:
    """Empty input and bad bodies are 4xx; streams are OpenAI's SSE; `/control` injects failures."""
    assert (await stub.post("/v1/embeddings", json={"model": "m", "input": []})).status_code == 400
    assert (await stub.post("/v1/embeddings", json={"input": "a"})).status_code == 422
    stream = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    streamed = await stub.post("/v1/chat/completions", json=stream)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [line for line in streamed.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-1])
    await stub.post("/control", json={"fail_status": 503})
    assert (await stub.post("/v1/embeddings", json={"model": "m", "input": "a"})).status_code == 503
    await stub.post("/control", json={"fail_status": 0})
    assert (await stub.post("/v1/embeddings", json={"model": "m", "input": "a"})).status_code == 200
