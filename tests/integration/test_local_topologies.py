"""`make up-scaled REDIS_TOPOLOGY=sentinel|cluster` on the local runtime: the API reports the topology, and
`make redis-kill` kills the current primary while requests keep answering until the replica takes over."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.stack import LocalStack
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer demo-school-123"}


def _redis_port(taken: set[int]) -> int:
    """A first Redis port P with P..P+5, their cluster buses (+10000) and the sentinels (+20000..+20002) all free,
    and all below the ephemeral range (32768 and up on Linux), where an outgoing connection of any process on
    the machine can take a port between our check and the node's bind."""
    for _ in range(200):
        base = random.randrange(10000, 12700)
        ports = [*range(base, base + 6), *range(base + 10000, base + 10006), *range(base + 20000, base + 20003)]
        if not taken & set(ports) and all(_bindable(port) for port in ports):
            return base
    raise RuntimeError("no free Redis ports below the ephemeral range")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(params=["sentinel", "cluster"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp(request.param), 1, env={"STUB_LATENCY_MS": "5", "STUB_DIM": "8"})
    at = local.options.index("--redis-port")
    local.options[at + 1] = str(_redis_port(set(local.ports.values()) | {local.ports["api"] + 1}))
    local.options += ["--redis-topology", request.param]
    with local.running():
        yield local


def test_redis_kill_fails_over_while_the_api_answers(stack: LocalStack) -> None:
    """The stack reports its topology; after redis-kill every request still answers 200, and the API reports
    the promoted replica as its primary and is healthy again without a restart."""
    info = stack.info()
    api = info["api_url"]
    health = httpx.get(f"{api}/cache/health", timeout=5).json()
    assert health["redis_topology"]["mode"] == info["redis_topology"]
    assert health["status"] == "healthy"
    before = set(health["redis_topology"]["primaries"])
    assert "killed" in stack.check("redis-kill")
    deadline, statuses = time.monotonic() + 30, []
    with httpx.Client(base_url=api, headers=AUTH, timeout=10) as client:
        while time.monotonic() < deadline:
            body = {"model": "text-embedding-3-small", "input": f"during failover {len(statuses)}"}
            statuses.append(client.post("/v1/embeddings", json=body).status_code)
            health = client.get("/cache/health").json()
            if health["status"] == "healthy" and set(health["redis_topology"]["primaries"]) != before:
                break
    assert set(statuses) == {200}
    assert health["status"] == "healthy", health
    wait_until(lambda: httpx.get(f"{api}/readyz", timeout=5).status_code == 200, timeout=10)
