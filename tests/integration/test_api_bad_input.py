"""Every route's bad input answers 4xx with a JSON `detail`, over real HTTP against a real API process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.errors import error_message
from tests.support.processes import Stack
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer demo-school-123", "Content-Type": "application/json"}
MSGS = [{"role": "user", "content": "x"}]


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    stack = Stack(
        tmp_path_factory.mktemp("badinput"),
        redis_server.url,
        MAX_BATCH_SIZE="4",
        MAX_INPUT_CHARS="50",
        MAX_REQUEST_BYTES="10000",
    )
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        yield client
    stack.stop()


EMBEDDING_CASES = [
    (b'{"model": "m", "input": ', 422),  # truncated JSON
    (b"\xff\xfe not utf-8", 422),
    (b"[]", 422),
    (b'"just a string"', 422),
    (b'{"model": "m"}', 422),
    (b'{"input": "x"}', 422),
    (b'{"model": "m", "input": []}', 400),
    (b'{"model": "m", "input": ""}', 400),
    (b'{"model": "m", "input": ["a", ""]}', 400),
    (b'{"model": "m", "input": ["a", "b", "c", "d", "e"]}', 400),  # over MAX_BATCH_SIZE
    (b'{"model": "m", "input": "' + b"x" * 51 + b'"}', 400),  # over MAX_INPUT_CHARS
    (b'{"model": "m", "input": [1, "a"]}', 422),
    (b'{"model": "m", "input": [[-1]]}', 422),
    (b'{"model": "m", "input": {"a": 1}}', 422),
    (b'{"model": "m", "input": "a", "encoding_format": "int8"}', 422),
    (b'{"model": "m", "input": "a", "dimensions": 0}', 422),
    (b'{"model": "m", "input": "a", "dimensions": "many"}', 422),
    (b'{"model": 5, "input": "a"}', 422),
    (b'{"model": "m", "input": "\\ud800"}', 400),
    (b'{"model": "m", "input": NaN}', 422),
]

CHAT_CASES = [
    (b"{", 422),
    (b'{"model": "g"}', 422),
    (b'{"model": "g", "messages": []}', 422),
    (b'{"model": "g", "messages": "hi"}', 422),
    (b'{"model": "g", "messages": [{"content": "no role"}]}', 422),
    (b'{"model": "g", "messages": [{"role": "user", "content": "x"}], "stream": [1]}', 422),
    (b'{"model": "g", "messages": [{"role": "user", "content": "x"}], "temperature": 3}', 422),
    (b'{"model": "g", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 422),
    (b'{"model": "g", "messages": [{"role": "user", "content": "x"}], "top_p": -1}', 422),
    (b'{"model": "g", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 422),
    (b'{"model": "g", "messages": [{"role": "user", "content": "' + b"y" * 51 + b'"}]}', 400),
    (b'{"model": "g", "messages": [{"role": "user", "content": "x"}], "extra": 1e999999}', 400),  # Infinity
    (b'{"model": "g", "messages": [{"role": "user", "content": "x"}], "big": 123456789012345678901234567890}', 200),
    (b'{"model": "g", "messages": [{"role": "user", "content": "\\udc00"}]}', 400),
]


@pytest.mark.parametrize(("body", "status"), EMBEDDING_CASES)
def test_embeddings_bad_input(api: httpx.Client, body: bytes, status: int) -> None:
    """A malformed or out-of-limits embeddings request is a 4xx with a JSON detail."""
    res = api.post("/v1/embeddings", content=body, headers=AUTH)
    assert res.status_code == status, res.text
    assert error_message(res)


@pytest.mark.parametrize(("body", "status"), CHAT_CASES)
def test_chat_bad_input(api: httpx.Client, body: bytes, status: int) -> None:
    """A malformed or out-of-limits chat request is a 4xx with a JSON detail (or served, never a 500)."""
    res = api.post("/v1/chat/completions", content=body, headers=AUTH)
    assert res.status_code == status, res.text
    if status >= 400:
        assert error_message(res)


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/chat/completions", "/cache/clear"])
def test_too_large_and_wrong_content_type(api: httpx.Client, path: str) -> None:
    """A body over MAX_REQUEST_BYTES is 413; a non-JSON content type is 422; both JSON."""
    big = api.post(path, content=b"x" * 20_000, headers=AUTH)
    assert big.status_code == 413
    assert "larger than" in error_message(big)
    if path != "/cache/clear":
        plain = api.post(path, content=b'{"model": "m", "input": "a"}', headers={**AUTH, "Content-Type": "text/plain"})
        assert plain.status_code == 422
        assert error_message(plain)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", "/cache/clear?cache=everything", AUTH, 422),
        ("POST", "/cache/clear", {**AUTH, "X-School-Id": "abc"}, 400),
        ("POST", "/cache/clear", {**AUTH, "X-School-Id": "-5"}, 400),
        ("POST", "/v1/embeddings", {**AUTH, "X-School-Id": "1" * 40}, 400),
        ("GET", "/cache/clear", AUTH, 405),
        ("DELETE", "/v1/embeddings", AUTH, 405),
        ("POST", "/cache/health", {}, 405),
        ("POST", "/cache/stats", {}, 405),
        ("POST", "/healthz", {}, 405),
        ("POST", "/readyz", {}, 405),
        ("POST", "/metrics", {}, 405),
        ("GET", "/v1/models/../../etc/passwd", {}, 404),
        ("GET", "/nowhere", {}, 404),
    ],
)
def test_other_routes_bad_input(
    api: httpx.Client, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    """Bad queries, bad X-School-Id values, wrong methods and unknown paths are 4xx JSON."""
    res = api.request(method, path, headers=headers, json={"model": "m", "input": "a"} if method == "POST" else None)
    assert res.status_code == status, res.text
    assert error_message(res)
