"""Fair sharing through nginx: while school 456 floods unique inputs into a small Redis, school 123 keeps
asking for its hot set of 200 inputs and keeps getting HITs, and its entries stay in Redis. The local scaled
stack (3 replicas) runs with REDIS_MAXMEMORY=4mb and a tight per-school write budget, so the flood (about
7 MB of embeddings) would overflow Redis without the budget (the negative control shows it does)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.support.stack import LocalStack

pytestmark = pytest.mark.integration

HOT = [f"school 123 hot question {i}" for i in range(200)]
FLOOD_BATCHES, BATCH = 50, 128
ENV = {
    "STUB_LATENCY_MS": "5",
    "STUB_DIM": "256",
    "REDIS_MAXMEMORY": "4mb",
    "CACHE_TENANT_WRITE_RATE": "20",
    "CACHE_TENANT_WRITE_BURST": "300",
}


def embed(client: httpx.Client, url: str, key: str, inputs: list[str]) -> httpx.Response:
    body = {"model": "text-embedding-3-small", "input": inputs}
    return client.post(f"{url}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}"})


def flood_and_measure(info: dict[str, Any]) -> tuple[float, int, dict[str, int]]:
    """School 123 warms its hot set, then keeps asking for it while school 456 floods; returns 123's HIT share
    during the flood, how many of its hot entries Redis still holds, and Redis's eviction figures."""
    url = info["nginx_url"]
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(HOT), 50):
            assert embed(client, url, "demo-school-123", HOT[start : start + 50]).status_code == 200
        done = threading.Event()

        def flood() -> None:
            with httpx.Client(timeout=30) as flooder:
                for _ in range(FLOOD_BATCHES):
                    inputs = [f"flood {uuid.uuid4()}" for _ in range(BATCH)]
                    assert embed(flooder, url, "demo-school-456", inputs).status_code == 200
            done.set()

        flooder = threading.Thread(target=flood)
        flooder.start()
        answers: list[str] = []
        deadline = time.monotonic() + 120
        i = 0
        while not done.is_set() and time.monotonic() < deadline:
            res = embed(client, url, "demo-school-123", [HOT[i % len(HOT)]])
            assert res.status_code == 200
            answers.append(res.headers["x-cache"])
            i += 1
        flooder.join(timeout=120)
    with redis.Redis.from_url(info["redis_url"], socket_timeout=5) as r:
        kept = sum(1 for _ in r.scan_iter(match="cache:embedding:school:123:*", count=1000))
        stats = r.info("stats")
        memory = r.info("memory")
    figures = {"evicted_keys": int(stats["evicted_keys"]), "used_memory": int(memory["used_memory"])}
    return answers.count("HIT") / max(1, len(answers)), kept, figures


@pytest.fixture
def stack_with(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    made: list[LocalStack] = []

    def start(**env: str) -> dict[str, Any]:
        local = LocalStack(tmp_path_factory.mktemp("flood"), 3, env={**ENV, **env})
        made.append(local)
        local.up()
        return local.info()

    yield start
    for local in made:
        local.destroy()


def test_a_flooding_school_does_not_push_out_another_schools_hot_entries(stack_with: Any) -> None:
    """With the per-school write budget, >= 95 % of school 123's requests are HITs during the flood, and all
    200 of its hot entries are still in Redis afterwards."""
    hit_share, kept, figures = flood_and_measure(stack_with())
    assert hit_share >= 0.95, (hit_share, figures)
    assert kept == len(HOT), (kept, figures)


def test_without_the_write_budget_the_flood_evicts_the_hot_entries(stack_with: Any) -> None:
    """The negative control: with an unlimited budget the same flood overflows Redis and evicts entries of
    school 123 (they are served from the replicas' memory, so Redis's LRU sees them as cold)."""
    _, kept, figures = flood_and_measure(stack_with(CACHE_TENANT_WRITE_RATE="0"))
    assert figures["evicted_keys"] > 0, figures
    assert kept < len(HOT), (kept, figures)
