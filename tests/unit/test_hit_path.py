"""The lean embeddings hit path: hand-built bodies equal orjson's, the route's own body parsing answers
as FastAPI's body parameters did, remembered metric children, and the stub's padded chat answers."""

from __future__ import annotations

import base64
from array import array
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import orjson
import pytest
from rag_api.app import create_app
from rag_api.config import Settings
from rag_api.metrics import CACHE_RESULTS, child
from rag_api.routes.embeddings import base64_body, float_body
from upstream_stub import create_app as create_stub
from upstream_stub.app import StubState
from upstream_stub.vectors import chat_answer

from tests.support.errors import error_message

AUTH = {"Authorization": "Bearer demo-school-123"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, redis_enabled=False, upstream_base_url="http://stub/v1", log_level="warning"
    )
    upstream = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_stub(StubState(latency_ms=0, dim=8))))
    app = create_app(settings, upstream_http_client=upstream)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        yield c


def _payload(vectors: list[Any], model: str, tokens: int) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


@pytest.mark.parametrize("count", [0, 1, 3])
@pytest.mark.parametrize("model", ["text-embedding-3-small", 'a "quoted" \\ módel\n'])
def test_bodies_are_byte_for_byte_orjson(count: int, model: str) -> None:
    """The base64 and float bodies are exactly what orjson makes of the OpenAI-shaped object."""
    vectors = [array("f", [0.5 * i, -1.25, 3.0e-7, float(i)]) for i in range(count)]
    b64 = [base64.b64encode(v.tobytes()).decode() for v in vectors]
    assert base64_body(vectors, model, 7) == orjson.dumps(_payload(b64, model, 7))
    assert float_body(vectors, model, 7) == orjson.dumps(_payload([v.tolist() for v in vectors], model, 7))


async def test_base64_and_float_answers_carry_the_same_vector(client: httpx.AsyncClient) -> None:
    """A cached hit in base64 decodes to the float answer's vector, and the second request is a HIT."""
    floats = await client.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=AUTH)
    b64 = await client.post(
        "/v1/embeddings", json={"model": "m", "input": "x", "encoding_format": "base64"}, headers=AUTH
    )
    assert b64.headers["x-cache"] == "HIT"
    packed = array("f")
    packed.frombytes(base64.b64decode(b64.json()["data"][0]["embedding"]))
    assert packed.tolist() == floats.json()["data"][0]["embedding"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "loc"),
    [
        (b"", "application/json", 422, ["body"]),
        (b'{"model": "m", "input": "a"}', "text/plain", 422, ["body"]),
        (b'{"model": "m", "input": ', "application/json", 422, ["body", "24"]),
        (b'{"model": "m", "input": 5}', "application/json", 422, ["body", "input", "str"]),
        (b'{"model": "m", "input": "\\ud800"}', "application/json", 400, None),  # the stdlib's parse, as before
        (b'{"model": "m", "input": "a"}', "application/vnd.api+json; charset=utf-8", 200, None),
        (b'{"model": "m", "input": "a"}', "", 200, None),
    ],
)
async def test_body_errors_answer_as_fastapi_did(
    client: httpx.AsyncClient, content: bytes, content_type: str, status: int, loc: list[str] | None
) -> None:
    """Empty, non-JSON, malformed and invalid bodies are 422 naming the field; odd valid ones are served."""
    res = await client.post("/v1/embeddings", content=content, headers={**AUTH, "Content-Type": content_type})
    assert res.status_code == status, res.text
    if loc is not None:
        error_message(res)  # OpenAI's envelope; the failing field is its `param`, without the "body" prefix
        assert res.json()["error"]["param"] == (".".join(loc[1:]) or None)


async def test_the_key_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    """Without a key, even a malformed body is a 401: nothing about the body is told to an unknown caller."""
    res = await client.post("/v1/embeddings", content=b"{", headers={"Content-Type": "application/json"})
    assert res.status_code == 401


async def test_the_route_stays_documented_and_refuses_other_methods(client: httpx.AsyncClient) -> None:
    """The lean route keeps its OpenAPI request body, and a DELETE is a 405 JSON answer."""
    schema = (await client.get("/openapi.json")).json()
    body = schema["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"input", "model", "encoding_format"} <= set(body["properties"])
    res = await client.delete("/v1/embeddings", headers=AUTH)
    assert res.status_code == 405
    assert error_message(res)


def test_metric_children_are_remembered() -> None:
    """`child` answers the same object as `labels()` and does not ask again."""
    first = child(CACHE_RESULTS, "unit-test", "HIT")
    assert first is CACHE_RESULTS.labels("unit-test", "HIT")
    assert child(CACHE_RESULTS, "unit-test", "HIT") is first


@pytest.mark.parametrize("length", [0, 50, 2048])
def test_stub_pads_chat_answers_to_the_asked_length(length: int) -> None:
    """With `chat_chars`, the stub's answer is exactly that long (never shorter than its plain answer)."""
    messages: list[dict[str, object]] = [{"role": "user", "content": "hi"}]
    plain = chat_answer("m", messages)
    padded = chat_answer("m", messages, length=length)
    assert padded.startswith(plain)
    assert len(padded) == max(length, len(plain))
