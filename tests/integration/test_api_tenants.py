"""Tenant isolation and the 401/403 cases, over real HTTP against a real API, stub and redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.errors import error_message
from tests.support.processes import Stack
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

T123 = {"Authorization": "Bearer demo-school-123"}
T456 = {"Authorization": "Bearer demo-school-456"}
ADMIN = {"Authorization": "Bearer demo-admin"}
EMB = {"model": "m", "input": "tenant text"}


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("tenants"), redis_server.url)
    yield running
    running.stop()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        client.post("/cache/clear", json={"all": True}, headers=ADMIN).raise_for_status()
        stack.stub.reset()
        yield client


def test_two_tenants_never_see_each_others_entries(api: httpx.Client, stack: Stack, redis_server: RedisServer) -> None:
    """School 456 misses what school 123 cached, and the Redis keys are namespaced by school."""
    assert api.post("/v1/embeddings", json=EMB, headers=T123).headers["x-cache"] == "MISS"
    assert api.post("/v1/embeddings", json=EMB, headers=T123).headers["x-cache"] == "HIT"
    assert api.post("/v1/embeddings", json=EMB, headers=T456).headers["x-cache"] == "MISS"
    chat = {"model": "g", "messages": [{"role": "user", "content": "secret"}]}
    assert api.post("/v1/chat/completions", json=chat, headers=T123).headers["x-cache"] == "MISS"
    assert api.post("/v1/chat/completions", json=chat, headers=T456).headers["x-cache"] == "MISS"
    assert stack.stub.stats() == {"embedding_requests": 2, "embedding_inputs": 2, "chat_requests": 2, "chat_streams": 0}
    with redis_server.client() as r:
        schools = {k.decode().split(":")[3] for k in r.scan_iter("cache:*:school:*")}
    assert schools == {"123", "456"}


def test_admin_acts_for_a_named_school(api: httpx.Client) -> None:
    """The admin key with X-School-Id reads that school's entries, and must name one on data routes."""
    api.post("/v1/embeddings", json=EMB, headers=T123)
    res = api.post("/v1/embeddings", json=EMB, headers={**ADMIN, "X-School-Id": "123"})
    assert res.headers["x-cache"] == "HIT"
    unnamed = api.post("/v1/embeddings", json=EMB, headers=ADMIN)
    assert unnamed.status_code == 400
    assert "X-School-Id" in error_message(unnamed)


def test_tenant_clear_touches_only_its_school(api: httpx.Client) -> None:
    """A tenant's clear empties its own school; the other school's entries stay; admin clears a named one."""
    api.post("/v1/embeddings", json=EMB, headers=T123)
    api.post("/v1/embeddings", json=EMB, headers=T456)
    res = api.post("/cache/clear", headers=T123)
    assert res.json()["school_id"] == 123
    assert api.post("/v1/embeddings", json=EMB, headers=T123).headers["x-cache"] == "MISS"
    assert api.post("/v1/embeddings", json=EMB, headers=T456).headers["x-cache"] == "HIT"
    assert api.post("/cache/clear", headers={**ADMIN, "X-School-Id": "456"}).json()["school_id"] == 456
    assert api.post("/v1/embeddings", json=EMB, headers=T456).headers["x-cache"] == "MISS"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer unknown-key"},
        {"Authorization": "Basic ZGVtbzpkZW1v"},
        {"Authorization": "demo-school-123"},
        {"Authorization": "Bearer demo-school-12"},
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/embeddings", EMB),
        ("POST", "/v1/chat/completions", {"model": "g", "messages": [{"role": "user", "content": "x"}]}),
        ("POST", "/cache/clear", None),
    ],
)
def test_missing_or_unknown_key_is_401(
    api: httpx.Client, headers: dict[str, str], method: str, path: str, body: object
) -> None:
    """No key, a malformed header or an unknown key is 401 with a JSON detail and WWW-Authenticate."""
    res = api.request(method, path, json=body, headers=headers)
    assert res.status_code == 401
    assert error_message(res)
    assert res.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/embeddings", EMB),
        ("POST", "/v1/chat/completions", {"model": "g", "messages": [{"role": "user", "content": "x"}]}),
        ("POST", "/cache/clear", None),
    ],
)
def test_tenant_naming_another_school_is_403(api: httpx.Client, method: str, path: str, body: object) -> None:
    """A tenant key with another school's X-School-Id is 403; with its own it works."""
    res = api.request(method, path, json=body, headers={**T123, "X-School-Id": "456"})
    assert res.status_code == 403
    assert "another school" in error_message(res)
    assert api.request(method, path, json=body, headers={**T123, "X-School-Id": "123"}).status_code == 200
