"""The API's edges (issue #14): exact keys, bounded JSON, explicit clears, targeted deletes, per-request cache
control, admin-only stats and OpenAI's chat validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx2
import orjson
import pytest
from upstream_stub import create_app as create_stub
from upstream_stub.app import StubState

from tests.support.errors import error_message
from tests.support.inprocess import ADMIN, T123, T456, Api, open_api

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"


def chat_body(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "g", "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with open_api() as running:
        yield running


async def cached(api: Api, path: str, body: dict[str, Any], headers: dict[str, str] = T123) -> str:
    res = await api.client.post(path, json=body, headers=headers)
    assert res.status_code == 200, res.text
    return str(res.headers["x-cache"])


# ----- finding 1: exact keys --------------------------------------------------------------------------------
async def test_a_string_does_not_take_a_token_arrays_entry(api: Api) -> None:
    """Finding 1: a string spelling the old token-key marker is its own entry, not the token array's."""
    assert await cached(api, EMB, {"model": "m", "input": [7, 8, 9]}) == "MISS"
    assert await cached(api, EMB, {"model": "m", "input": "\x00tokens:7,8,9"}) == "MISS"
    assert api.stub.embedding_requests == 2


# ----- finding 2: bounded JSON depth ------------------------------------------------------------------------
@pytest.mark.parametrize("path", [EMB, CHAT, "/cache/clear", "/cache/delete"])
@pytest.mark.parametrize("depth", [65, 1000, 9000])
async def test_deep_json_is_a_400_on_every_route(api: Api, path: str, depth: int) -> None:
    """Finding 2: input nested deeper than 64 levels is the same 400 on every route, never a 500."""
    raw = b'{"model": "m", "input": ' + b"[" * depth + b"]" * depth + b"}"
    res = await api.client.post(path, content=raw, headers={**ADMIN, "X-School-Id": "123"})
    assert res.status_code == 400, res.text
    assert "nested deeper than 64" in error_message(res)


async def test_brackets_inside_strings_do_not_count(api: Api) -> None:
    """Only real nesting counts: brackets inside a string are text."""
    assert await cached(api, EMB, {"model": "m", "input": "[" * 90}) == "MISS"


# ----- finding 3: explicit clears ---------------------------------------------------------------------------
async def fill(api: Api) -> None:
    for headers in (T123, T456):
        await cached(api, EMB, {"model": "m", "input": "x"}, headers)


async def schools_cached(api: Api) -> set[str]:
    keys = fakeredis.FakeRedis(server=api.redis).keys("cache:embedding:school:*")
    return {k.decode().split(":")[3] for k in keys}


@pytest.mark.parametrize(
    ("headers", "body", "query"),
    [
        ({**ADMIN, "X-School-Id": ""}, None, ""),
        ({**ADMIN, "X-School-Id": "  "}, None, ""),
        (ADMIN, None, ""),
        (ADMIN, {}, ""),
        (ADMIN, {"school_id": "456"}, ""),
        (ADMIN, {"school_id": 0}, ""),
        (ADMIN, {"school_id": True}, ""),
        (ADMIN, {"all": False}, ""),
        (ADMIN, {"all": True, "school_id": 456}, ""),
        ({**ADMIN, "X-School-Id": "123"}, {"school_id": 456}, ""),
        ({**ADMIN, "X-School-Id": "123"}, {"all": True}, ""),
        (ADMIN, {"school": 456}, ""),
        (ADMIN, [456], ""),
        (ADMIN, "456", ""),
        (ADMIN, None, "?school_id=456"),
        (T123, None, "?school_id=123"),
        ({**T123, "X-School-Id": ""}, None, ""),
    ],
)
async def test_an_unclear_scope_is_a_400_and_clears_nothing(
    api: Api, headers: dict[str, str], body: Any, query: str
) -> None:
    """Finding 3: an empty, blank, malformed, conflicting or query-string scope is a 400; nothing is cleared."""
    await fill(api)
    content = b"" if body is None else orjson.dumps(body)
    res = await api.client.post("/cache/clear" + query, content=content, headers=headers)
    assert res.status_code == 400, res.text
    assert error_message(res)
    assert await schools_cached(api) == {"123", "456"}


@pytest.mark.parametrize(
    ("headers", "body", "left"),
    [
        (ADMIN, {"school_id": 456}, {"123"}),
        ({**ADMIN, "X-School-Id": "456"}, None, {"123"}),
        ({**ADMIN, "X-School-Id": "456"}, {"school_id": 456}, {"123"}),
        (ADMIN, {"all": True}, set()),
        (T123, None, {"456"}),
        (T123, {"school_id": 123}, {"456"}),
    ],
)
async def test_an_explicit_scope_clears_exactly_it(
    api: Api, headers: dict[str, str], body: Any, left: set[str]
) -> None:
    """The admin clears the school it names (body or X-School-Id) or every school; a tenant its own."""
    await fill(api)
    content = b"" if body is None else orjson.dumps(body)
    res = await api.client.post("/cache/clear", content=content, headers=headers)
    assert res.status_code == 200, res.text
    assert await schools_cached(api) == left


@pytest.mark.parametrize("body", [{"school_id": 456}, {"all": True}])
async def test_a_tenant_may_not_clear_another_school_or_all(api: Api, body: dict[str, Any]) -> None:
    """A tenant key naming another school, or every school, is a 403."""
    await fill(api)
    res = await api.client.post("/cache/clear", json=body, headers=T123)
    assert res.status_code == 403
    assert await schools_cached(api) == {"123", "456"}


# ----- targeted delete --------------------------------------------------------------------------------------
async def test_delete_drops_exactly_one_embedding_batch(api: Api) -> None:
    """Deleting an embeddings batch removes its inputs' entries in the caller's school, nothing else."""
    await cached(api, EMB, {"model": "m", "input": ["a", "b", "c"]})
    await cached(api, EMB, {"model": "m", "input": ["a", "b"]}, T456)
    request = {"model": "m", "input": ["a", "b", "a"]}
    res = await api.client.post("/cache/delete", json={"route": EMB, "request": request}, headers=T123)
    assert res.json() == {"deleted": 2}
    again = await api.client.post("/cache/delete", json={"route": EMB, "request": request}, headers=T123)
    assert again.json() == {"deleted": 0}
    res = await api.client.post(EMB, json={"model": "m", "input": ["a", "b", "c"]}, headers=T123)
    assert res.headers["x-cache-hits"] == "1/3"
    assert await cached(api, EMB, {"model": "m", "input": ["a", "b"]}, T456) == "HIT"


async def test_delete_drops_a_chat_answer_for_the_named_school(api: Api) -> None:
    """The admin names the school beside the route; the key ignores `user` and `cache` as the route does."""
    await cached(api, CHAT, chat_body(user="u1"), T456)
    body = {"route": CHAT, "request": chat_body(cache={"no-cache": True}), "school_id": 456}
    assert (await api.client.post("/cache/delete", json=body, headers=ADMIN)).json() == {"deleted": 1}
    assert await cached(api, CHAT, chat_body(), T456) == "MISS"


async def test_delete_respects_the_namespace(api: Api) -> None:
    """A namespaced entry is deleted by naming its namespace in the request's `cache` object."""
    ns = {"namespace": "tests"}
    await cached(api, EMB, {"model": "m", "input": "n"})
    await cached(api, EMB, {"model": "m", "input": "n", "cache": ns})
    body = {"route": EMB, "request": {"model": "m", "input": "n", "cache": ns}}
    assert (await api.client.post("/cache/delete", json=body, headers=T123)).json() == {"deleted": 1}
    assert await cached(api, EMB, {"model": "m", "input": "n"}) == "HIT"


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (ADMIN, {"route": EMB, "request": {"model": "m", "input": "a"}}, 400),
        (T123, {"route": EMB, "request": {"model": "m", "input": "a"}, "school_id": 456}, 403),
        (T123, {"route": "/v1/other", "request": {}}, 400),
        (T123, {"route": EMB}, 400),
        (T123, {"route": EMB, "request": {"model": "m"}}, 422),
        (T123, {"route": EMB, "request": {"model": "m", "input": ""}}, 400),
        ({"Authorization": "Bearer nope"}, {"route": EMB, "request": {"model": "m", "input": "a"}}, 401),
    ],
)
async def test_delete_refuses_what_it_cannot_pin_down(
    api: Api, headers: dict[str, str], body: dict[str, Any], status: int
) -> None:
    """Delete needs a known route, a valid request and a school the key may act for."""
    res = await api.client.post("/cache/delete", json=body, headers=headers)
    assert res.status_code == status, res.text
    assert error_message(res)


# ----- per-request cache control ----------------------------------------------------------------------------
async def test_body_cache_object_controls_read_and_write(api: Api) -> None:
    """`cache: {"no-store": true}` neither reads nor writes; `{"no-cache": true}` skips the read and writes."""
    assert await cached(api, CHAT, chat_body("a", cache={"no-store": True})) == "BYPASS"
    assert await cached(api, CHAT, chat_body("a")) == "MISS"
    assert await cached(api, CHAT, chat_body("b", cache={"no-cache": True})) == "BYPASS"
    assert await cached(api, CHAT, chat_body("b")) == "HIT"
    assert api.stub.chat_requests == 3


@pytest.mark.parametrize(
    ("header", "cache", "ttl"),
    [
        ("max-age=60", None, 60),
        (None, {"ttl": 60}, 60),
        (None, {"s-maxage": 60}, 60),
        ("max-age=60", {"ttl": 60}, 60),
        ("max-age=99999999", None, 3600),
        (None, {"ttl": 10**8}, 3600),
        (None, None, 3600),
    ],
)
async def test_ttl_directives_set_the_entrys_ttl_within_the_maximum(
    header: str | None, cache: dict[str, Any] | None, ttl: int
) -> None:
    """max-age, cache.ttl and cache.s-maxage set the entry's TTL, bounded by the cache's configured TTL."""
    async with open_api(embedding_cache_ttl=3600, cache_stale_if_error=0) as api:
        body: dict[str, Any] = {"model": "m", "input": "ttl"} | ({"cache": cache} if cache else {})
        headers = {**T123, **({"Cache-Control": header} if header else {})}
        assert (await api.client.post(EMB, json=body, headers=headers)).status_code == 200
        redis = fakeredis.FakeRedis(server=api.redis)
        (key,) = redis.keys("cache:embedding:*")
        assert ttl - 2 <= redis.pttl(key) / 1000 <= ttl


@pytest.mark.parametrize(("header", "cache"), [("max-age=0", None), (None, {"ttl": 0})])
async def test_a_zero_ttl_stores_nothing(api: Api, header: str | None, cache: dict[str, Any] | None) -> None:
    """A TTL of 0 is an answer that may not be kept: BYPASS, nothing written."""
    body: dict[str, Any] = {"model": "m", "input": "zero"} | ({"cache": cache} if cache else {})
    headers = {**T123, **({"Cache-Control": header} if header else {})}
    assert (await api.client.post(EMB, json=body, headers=headers)).headers["x-cache"] == "BYPASS"
    assert await cached(api, EMB, {"model": "m", "input": "zero"}) == "MISS"


@pytest.mark.parametrize(
    ("header", "cache"),
    [
        ("bogus", None),
        ("max-age=abc", None),
        ("max-age=-1", None),
        ("no-cache=1", None),
        ("max-stale", None),
        (None, {"ttl": -1}),
        (None, {"ttl": "60"}),
        (None, {"no-cache": "yes"}),
        (None, {"bogus": 1}),
        (None, {"namespace": ""}),
        (None, "no-cache"),
        ("max-age=60", {"ttl": 30}),
        (None, {"ttl": 60, "s-maxage": 30}),
    ],
)
@pytest.mark.parametrize("path", [EMB, CHAT])
async def test_unknown_or_conflicting_directives_are_a_400(api: Api, path: str, header: str | None, cache: Any) -> None:
    """An unknown, malformed or conflicting directive, in the header or the body, is a 400 in OpenAI's envelope."""
    body = {"model": "m", "input": "x"} if path == EMB else chat_body()
    headers = {**T123, **({"Cache-Control": header} if header else {})}
    res = await api.client.post(path, json={**body, "cache": cache} if cache is not None else body, headers=headers)
    assert res.status_code == 400, res.text
    assert "cache" in error_message(res).lower()
    assert res.json()["error"]["code"] == "invalid_cache_directive"


async def test_namespaces_partition_a_schools_entries(api: Api) -> None:
    """The same request in two namespaces (and none) is three entries; each is a hit in its own namespace."""
    for ns in (None, "a", "b"):
        body = {"model": "m", "input": "same"} | ({"cache": {"namespace": ns}} if ns else {})
        assert await cached(api, EMB, body) == "MISS"
        assert await cached(api, EMB, body) == "HIT"
    keys = fakeredis.FakeRedis(server=api.redis).keys("cache:embedding:school:123:*")
    assert len(keys) == 3


async def test_the_cache_object_is_never_forwarded() -> None:
    """The model never sees `cache`, and it is not part of the key (the same request with it is a HIT)."""
    seen: list[dict[str, Any]] = []

    async def record(request: httpx2.Request) -> None:
        seen.append(orjson.loads(request.content))

    stub = StubState(latency_ms=0, dim=8)
    upstream = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_stub(stub)), event_hooks={"request": [record]}
    )
    async with open_api(upstream=upstream, stub=stub) as api:
        assert await cached(api, CHAT, chat_body(cache={"ttl": 60})) == "MISS"
        assert await cached(api, CHAT, chat_body()) == "HIT"
        assert await cached(api, EMB, {"model": "m", "input": "f", "cache": {"no-cache": True}}) == "BYPASS"
    assert seen
    assert all("cache" not in body for body in seen)


async def test_the_schema_documents_the_cache_object(api: Api) -> None:
    """The OpenAPI schema declares `cache` (with its directives) and the Cache-Control header on both routes."""
    schema = (await api.client.get("/openapi.json")).json()
    for path in (EMB, CHAT):
        assert [p["name"] for p in schema["paths"][path]["post"]["parameters"]] == ["Cache-Control"]
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        options = body["properties"]["cache"]["anyOf"][0]
        assert set(options["properties"]) == {"no-cache", "no-store", "ttl", "s-maxage", "namespace"}


# ----- sampled completions ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "result"),
    [
        ({"temperature": 0}, "HIT"),
        ({"temperature": 0.7, "seed": 1}, "HIT"),
        ({"temperature": 0.7}, "BYPASS"),
        ({"temperature": 0, "top_p": 0.5}, "BYPASS"),
        ({}, "BYPASS"),
    ],
)
async def test_sampled_answers_bypass_when_switched_off(extra: dict[str, Any], result: str) -> None:
    """With CACHE_SAMPLED_COMPLETIONS=false, sampled requests (OpenAI's default temperature is 1) bypass."""
    async with open_api(cache_sampled_completions=False) as api:
        await cached(api, CHAT, chat_body(**extra))
        assert await cached(api, CHAT, chat_body(**extra)) == result


async def test_sampled_answers_are_cached_by_default(api: Api) -> None:
    """By default a sampled answer is cached like any other (documented in the README)."""
    await cached(api, CHAT, chat_body(temperature=1.2))
    assert await cached(api, CHAT, chat_body(temperature=1.2)) == "HIT"


# ----- stats and chat validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "status"), [({}, 401), (T123, 403), ({**T123, "X-School-Id": "123"}, 403)])
async def test_stats_need_the_admin_key(api: Api, headers: dict[str, str], status: int) -> None:
    """/cache/stats shows every school's figures and Redis's: the admin key only."""
    res = await api.client.get("/cache/stats", headers=headers)
    assert res.status_code == status
    assert error_message(res)


@pytest.mark.parametrize(
    ("messages", "where"),
    [
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "system", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "text", "text": "x" * 101}]}], "messages[0].content[0].text"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "y" * 101}]}],
            "messages[0].content[1].text",
        ),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0].text"),
    ],
)
async def test_chat_messages_are_validated_as_openai_does(api: Api, messages: list[Any], where: str) -> None:
    """User and system messages need content; every text part is bounded by MAX_INPUT_CHARS (100 here)."""
    res = await api.client.post(CHAT, json={"model": "g", "messages": messages}, headers=T123)
    assert res.status_code == 400, res.text
    assert where in error_message(res)
    assert api.stub.chat_requests == 0


async def test_an_assistant_message_may_omit_content(api: Api) -> None:
    """An assistant turn without content (it carried tool calls) is accepted, as OpenAI accepts it."""
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": []},
        {"role": "user", "content": "r"},
    ]
    assert await cached(api, CHAT, {"model": "g", "messages": messages}) == "MISS"


async def test_a_stream_follows_the_same_policy(api: Api) -> None:
    """Streamed chat takes the same policy: its namespace (one entry for both forms), no-store, no forwarding."""
    streamed = chat_body("s", stream=True, cache={"namespace": "n"})
    assert (await api.client.post(CHAT, json=streamed, headers=T123)).headers["x-cache"] == "MISS"
    assert (await api.client.post(CHAT, json=streamed, headers=T123)).headers["x-cache"] == "HIT"
    assert await cached(api, CHAT, chat_body("s", cache={"namespace": "n"})) == "HIT"
    assert await cached(api, CHAT, chat_body("s")) == "MISS"
    no_store = chat_body("s", stream=True, cache={"no-store": True})
    res = await api.client.post(CHAT, json=no_store, headers=T123)
    assert (res.status_code, res.headers["x-cache"]) == (200, "BYPASS")
    assert res.text.endswith("data: [DONE]\n\n")
