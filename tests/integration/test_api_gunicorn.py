"""The API under gunicorn with several uvicorn workers: shared cache, summed Prometheus metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import Stack
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

T123 = {"Authorization": "Bearer demo-school-123"}


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("gunicorn"), redis_server.url, workers=3)
    yield running
    running.stop()


def counter(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_sum_every_worker(stack: Stack) -> None:
    """Forty requests spread over three workers show as forty in /metrics, whichever worker answers."""
    with httpx.Client(base_url=stack.url, timeout=10) as api:
        before = counter(api.get("/metrics").text, "rag_http_requests_total", route="/v1/embeddings", status="200")
        for i in range(40):
            # A new connection each time, so that the kernel spreads them over the workers.
            res = httpx.post(stack.url + "/v1/embeddings", json={"model": "m", "input": f"g{i % 4}"}, headers=T123)
            assert res.status_code == 200
        text = api.get("/metrics").text
    after = counter(text, "rag_http_requests_total", route="/v1/embeddings", status="200")
    assert after - before == 40
    assert counter(text, "rag_cache_results_total", route="embeddings", result="HIT") >= 36
    assert re.search(r"^rag_upstream_requests_total\{.*\} \d", text, re.MULTILINE)


def test_workers_share_one_cache(stack: Stack) -> None:
    """An input cached by one worker is a HIT on the others (through Redis), so the stub is called once."""
    stack.stub.reset()
    for _ in range(12):
        res = httpx.post(stack.url + "/v1/embeddings", json={"model": "m", "input": "shared"}, headers=T123)
        assert res.status_code == 200
    assert stack.stub.stats()["embedding_inputs"] == 1
