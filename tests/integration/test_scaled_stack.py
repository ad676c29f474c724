"""The local scaled stack (3 replicas behind nginx, one Redis, the stub) on free ports, driven by deploy.stack.

The tests run in file order against one stack: sharing first, then Redis killed and restarted, then a replica
killed, and last `make down`, which must leave no process behind.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.stack import REPO, LocalStack
from tests.support.wait import port_open, wait_until

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer demo-school-123"}
REPLICAS = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One scaled stack for the module; torn down (and anything left SIGKILLed) at the end."""
    local = LocalStack(tmp_path_factory.mktemp("scaled"), REPLICAS, env={"STUB_LATENCY_MS": "20", "STUB_DIM": "32"})
    with local.running():
        yield local


@pytest.fixture(scope="module")
def info(stack: LocalStack) -> dict[str, Any]:
    return stack.info()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def embed(client: httpx.Client, base: str, text: str) -> httpx.Response:
    return client.post(f"{base}/v1/embeddings", json={"model": "text-embedding-3-small", "input": text}, headers=AUTH)


def stub_embedding_requests(client: httpx.Client, info: dict[str, Any]) -> int:
    return int(client.get(f"{info['stub_url']}/stats").json()["embedding_requests"])


def health_statuses(client: httpx.Client, base: str, count: int) -> list[str]:
    answers = [client.get(f"{base}/cache/health") for _ in range(count)]
    assert all(r.status_code == 200 for r in answers), [r.status_code for r in answers]
    return [str(r.json()["status"]) for r in answers]


def cache_keys(info: dict[str, Any]) -> set[bytes]:
    with redis.Redis.from_url(info["redis_url"], socket_timeout=2) as r:
        return set(r.scan_iter(match="cache:embedding:*", count=1000))


def test_info_describes_the_scaled_stack(stack: LocalStack, info: dict[str, Any]) -> None:
    """`stack.py info --json` names nginx as the API, the stub, the Redis and one URL per replica."""
    assert info["runtime"] == "local"
    assert info["api_url"] == info["nginx_url"] == f"http://127.0.0.1:{stack.ports['nginx']}"
    assert info["replica_urls"] == [f"http://127.0.0.1:{stack.ports['api'] + i}" for i in range(REPLICAS)]
    assert info["redis_url"].endswith(f"@127.0.0.1:{stack.ports['redis']}/0")  # with the generated password


def test_requests_through_nginx_reach_every_replica(client: httpx.Client, info: dict[str, Any]) -> None:
    """30 requests through nginx all succeed and are spread over the 3 replicas, each named in the headers."""
    answers = [embed(client, info["nginx_url"], f"spread {i} {uuid.uuid4()}") for i in range(30)]
    assert [r.status_code for r in answers] == [200] * 30
    assert {r.headers["X-Instance"] for r in answers} == {"api-1", "api-2", "api-3"}
    replica_addrs = {url.removeprefix("http://") for url in info["replica_urls"]}
    assert {r.headers["X-Upstream-Addr"] for r in answers} == replica_addrs


def test_an_embedding_computed_once_is_a_hit_on_the_other_replicas(client: httpx.Client, info: dict[str, Any]) -> None:
    """The first request computes (MISS, one stub call); the two other replicas answer it from Redis (HIT)."""
    client.post(f"{info['stub_url']}/stats/reset")
    text = f"shared {uuid.uuid4()}"
    first = embed(client, info["nginx_url"], text)
    assert first.status_code == 200
    assert first.headers["X-Cache"] == "MISS"
    others: dict[str, httpx.Response] = {}
    for _ in range(30):  # round robin reaches the other two within a few requests
        answer = embed(client, info["nginx_url"], text)
        assert answer.status_code == 200
        assert answer.headers["X-Cache"] == "HIT", answer.headers
        if answer.headers["X-Instance"] != first.headers["X-Instance"]:
            others.setdefault(answer.headers["X-Instance"], answer)
        if len(others) == REPLICAS - 1:
            break
    assert len(others) == REPLICAS - 1, f"reached only {others.keys()}"
    assert {r.headers["X-Cache-Tier"] for r in others.values()} == {"redis"}
    assert all(r.json()["data"][0]["embedding"] == first.json()["data"][0]["embedding"] for r in others.values())
    assert stub_embedding_requests(client, info) == 1


def test_redis_killed_then_restarted(stack: LocalStack, client: httpx.Client, info: dict[str, Any]) -> None:
    """Redis SIGKILLed: every request still answers 200 and health says degraded; started again: healthy within
    2 s of answering PING, with every entry written more than 1 s before the kill still there (AOF)."""
    nginx = info["nginx_url"]
    durable = [f"durable {i} {uuid.uuid4()}" for i in range(5)]
    assert all(embed(client, nginx, t).status_code == 200 for t in durable)
    written = cache_keys(info)
    assert len(written) >= len(durable)
    # Not a readiness wait: the AOF is fsynced every second, and this window is the durability under test.
    time.sleep(1.2)

    stack.check("redis-kill")
    assert not port_open(int(info["redis_url"].rsplit(":", 1)[1].split("/")[0]))
    answers = [embed(client, nginx, t) for t in durable * 2] + [embed(client, nginx, f"new {i}") for i in range(20)]
    assert [r.status_code for r in answers] == [200] * 30
    wait_until(
        lambda: set(health_statuses(client, nginx, 2 * REPLICAS)) == {"degraded"},
        timeout=5,
        what="every replica reports degraded through nginx",
    )

    stack.check("redis-start")  # returns once Redis answers PING, i.e. the AOF is loaded
    started = time.monotonic()
    for url in info["replica_urls"]:
        wait_until(lambda url=url: health_statuses(client, url, 1) == ["healthy"], timeout=2.5, what=f"{url} healthy")
    elapsed = time.monotonic() - started
    assert elapsed <= 2.0, f"healthy again after {elapsed:.2f}s"
    assert set(health_statuses(client, nginx, 2 * REPLICAS)) == {"healthy"}
    assert written <= cache_keys(info), "entries written before the kill were lost"


def test_a_killed_replica_does_not_fail_requests(stack: LocalStack, client: httpx.Client, info: dict[str, Any]) -> None:
    """One replica SIGKILLed (with its workers): requests through nginx keep succeeding, and it comes back."""
    killed_url = info["replica_urls"][0]
    stack.check("replica-kill", "--index", "1")
    answers = [embed(client, info["nginx_url"], f"during kill {i}") for i in range(30)]
    assert [r.status_code for r in answers] == [200] * 30
    wait_until(lambda: client.get(f"{killed_url}/readyz").status_code == 200, timeout=30, what="api-1 restarted")
    seen: set[str] = set()

    def all_back() -> bool:
        seen.update(embed(client, info["nginx_url"], f"back {uuid.uuid4()}").headers["X-Instance"] for _ in range(6))
        return len(seen) == REPLICAS

    wait_until(all_back, timeout=20, what="nginx sends to api-1 again")


def test_make_down_leaves_no_process(stack: LocalStack, info: dict[str, Any]) -> None:
    """`make down` stops supervisord, Redis, the stub, every replica and its workers, and nginx; data is kept."""
    assert stack.pids(), "the stack should be running before `make down`"
    env = {**os.environ, "STACK_RUN_DIR": str(stack.run_dir)}
    done = subprocess.run(
        ["make", "-s", "down", "RUNTIME=local"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runtime: local" in done.stderr
    assert stack.leftovers() == set()
    ports = [stack.ports["nginx"], stack.ports["stub"], stack.ports["redis"]]
    ports += [stack.ports["api"] + i for i in range(REPLICAS)]
    assert [p for p in ports if port_open(p)] == []
    assert (Path(stack.run_dir) / "redis" / "appendonlydir").is_dir()


def test_up_fails_with_the_logs_when_a_replica_cannot_start(tmp_path: Path) -> None:
    """With a setting the API rejects, `up` exits non-zero before its deadline and prints the replica's log."""
    local = LocalStack(tmp_path / "broken", 1, env={"TENANT_API_KEYS": "not-a-pair"})
    try:
        started = time.monotonic()
        done = local.run("up", "--scaled", "--replicas", "1", "--timeout", "15", timeout=60)
        local.pids()
        assert done.returncode != 0
        assert time.monotonic() - started < 45
        assert "TENANT_API_KEYS" in done.stderr
        assert "api-1.log" in done.stderr
    finally:
        assert not local.destroy()
