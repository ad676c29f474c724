"""When the model fails, the cache keeps answering: the local scaled stack (3 replicas behind nginx) with the
stub failing (500, 429 with Retry-After, stopped, slower than UPSTREAM_TIMEOUT).

For every failure: warm keys of both schools answer 200 from the cache, misses get the mapped status in
OpenAI's envelope (the official SDK raises the matching class), nginx marks no replica down and retries
nothing (one model call per client request), and replicas waiting on a failing leader share its failure.
"""

from __future__ import annotations

import uuid
import xmlrpc.client
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from supervisor.xmlrpc import SupervisorTransport

from tests.support.errors import error_message
from tests.support.stack import LocalStack
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SCHOOLS = {123: "demo-school-123", 456: "demo-school-456"}
MODEL = "text-embedding-3-small"
ENV = {
    "STUB_LATENCY_MS": "20",
    "STUB_DIM": "32",
    "UPSTREAM_TIMEOUT": "1",
    "REQUEST_TIMEOUT": "4",
    "CACHE_LEASE_WAIT": "3",
    # Chat entries expire at once, so the model-failure phases also see stale answers served.
    "LLM_CACHE_TTL": "1",
    # One failing model call per request is what the tests count; the breaker has its own test.
    "UPSTREAM_BREAKER_THRESHOLD": "1000",
}
# failure -> (what the stub is told, the status a miss answers, the SDK's exception class)
FAILURES: dict[str, tuple[dict[str, Any] | None, int, type[openai.APIStatusError]]] = {
    "model 500": ({"fail_status": 500}, 502, openai.InternalServerError),
    "model 429": ({"fail_status": 429, "retry_after": 7}, 429, openai.RateLimitError),
    "model stopped": (None, 502, openai.InternalServerError),
    "model slow": ({"latency_ms": 2500}, 504, openai.InternalServerError),
}
HEALTHY = {"fail_status": 0, "latency_ms": 20}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("model-failures"), 3, env=ENV).running() as local:
        yield local


@pytest.fixture(scope="module")
def info(stack: LocalStack) -> dict[str, Any]:
    return stack.info()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def warm(client: httpx.Client, info: dict[str, Any]) -> dict[int, list[str]]:
    """Five embedding inputs per school, cached while the model is healthy."""
    texts = {school: [f"warm {school} {i}" for i in range(5)] for school in SCHOOLS}
    for school, items in texts.items():
        for text in items:
            assert embed(client, info, school, text).status_code == 200
    return texts


def embed(client: httpx.Client, info: dict[str, Any], school: int, text: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {SCHOOLS[school]}"}
    return client.post(f"{info['nginx_url']}/v1/embeddings", json={"model": MODEL, "input": text}, headers=headers)


def chat(client: httpx.Client, info: dict[str, Any], school: int, text: str) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    headers = {"Authorization": f"Bearer {SCHOOLS[school]}"}
    return client.post(f"{info['nginx_url']}/v1/chat/completions", json=body, headers=headers)


def stub(client: httpx.Client, info: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> Any:
    res = (
        client.post(f"{info['stub_url']}{path}", json=body) if body is not None else client.get(info["stub_url"] + path)
    )
    res.raise_for_status()
    return res.json()


def supervisor(stack: LocalStack) -> Any:
    transport = SupervisorTransport(None, None, f"unix://{stack.run_dir / 'supervisor.sock'}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def nginx_disabled_a_replica(stack: LocalStack) -> list[str]:
    log = stack.run_dir / "logs" / "nginx-error.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if "temporarily disabled" in line or "no live upstreams" in line]


def sdk_client(info: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(api_key=SCHOOLS[123], base_url=f"{info['nginx_url']}/v1", max_retries=0, timeout=15)


@pytest.mark.parametrize("failure", list(FAILURES))
def test_warm_keys_answer_and_misses_get_the_mapped_error(
    failure: str, stack: LocalStack, info: dict[str, Any], client: httpx.Client, warm: dict[int, list[str]]
) -> None:
    """With the model failing, every school's warm keys answer 200 from the cache on every replica, each
    miss answers the mapped status in OpenAI's envelope after exactly one model call, and no replica is
    marked down by nginx."""
    control, status, sdk_error = FAILURES[failure]
    chats = {school: f"chat {failure} {school}" for school in SCHOOLS}
    for school, text in chats.items():  # cached now, expired (LLM_CACHE_TTL=1) by the time they are asked
        assert chat(client, info, school, text).status_code == 200
    stub(client, info, "/stats/reset", {})
    if control is None:
        supervisor(stack).stopProcess("stub")
    else:
        stub(client, info, "/control", control)
    try:
        instances = set()
        for _ in range(3):
            for school, texts in warm.items():
                for text in texts:
                    res = embed(client, info, school, text)
                    assert (res.status_code, res.headers["x-cache"]) == (200, "HIT"), (failure, res.text)
                    instances.add(res.headers["x-instance"])
        assert len(instances) == 3, instances  # every replica stayed in rotation and served hits

        for school, text in chats.items():
            stale = wait_until(
                lambda s=school, t=text: (r := chat(client, info, s, t)).headers.get("x-cache") == "STALE" and r,
                timeout=10,
                interval=0.2,
                what="an expired chat answer served STALE",
            )
            assert stale.status_code == 200

        misses = [embed(client, info, school, f"miss {failure} {uuid.uuid4()}") for school in SCHOOLS]
        for res in misses:
            assert res.status_code == status, res.text
            assert error_message(res)
            assert "," not in res.headers["x-upstream-addr"]  # nginx asked one replica, retried nowhere
            if status == 429:
                assert res.headers["retry-after"] == "7"
        with pytest.raises(sdk_error) as raised:
            sdk_client(info).embeddings.create(model=MODEL, input=f"sdk miss {failure} {uuid.uuid4()}")
        assert raised.value.status_code == status
        if control is not None:
            counters = stub(client, info, "/stats")
            assert counters["embedding_requests"] == len(misses) + 1  # one model call per client request
        assert nginx_disabled_a_replica(stack) == []
    finally:
        if control is None:
            supervisor(stack).startProcess("stub")
        else:
            stub(client, info, "/control", HEALTHY)


def test_replicas_waiting_on_a_failing_leader_share_its_failure(
    info: dict[str, Any], client: httpx.Client, warm: dict[int, list[str]]
) -> None:
    """Twelve concurrent requests for one key over three replicas: one model call, twelve mapped errors."""
    stub(client, info, "/stats/reset", {})
    stub(client, info, "/control", {"fail_status": 500, "latency_ms": 500})
    try:
        text = f"shared failure {uuid.uuid4()}"
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: embed(client, info, 456, text), range(12)))
        assert [r.status_code for r in answers] == [502] * 12
        assert len({r.headers["x-instance"] for r in answers}) > 1
        assert stub(client, info, "/stats")["embedding_requests"] == 1
    finally:
        stub(client, info, "/control", HEALTHY)


def test_the_model_recovered_answers_misses_again(info: dict[str, Any], client: httpx.Client) -> None:
    """Once the model answers again, new keys are computed and cached (after the failures' short memory)."""
    text = f"after {uuid.uuid4()}"
    first = embed(client, info, 123, text)
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    assert embed(client, info, 123, text).headers["x-cache"] == "HIT"
