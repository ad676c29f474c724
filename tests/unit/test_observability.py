"""Request ids, the access line, the exported cache figures, bounded labels and token costs (in-process)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from rag_api.access_log import ACCESS_LOGGER, JsonFormatter, TextFormatter, valid_request_id
from rag_api.config import ConfigError, load_settings
from rag_api.metrics import render
from rag_api.monitoring import OTHER, CacheExporter, ModelPrices, SchoolLabels

from tests.support.inprocess import T123, open_api

EMB = {"model": "text-embedding-3-small", "input": ["alpha", "beta"]}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, dict):
            self.lines.append(dict(record.args))


@pytest.fixture
def access() -> Iterator[_Lines]:
    """The access lines the app writes during the test (the `rag_api` loggers do not propagate)."""
    handler = _Lines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_request_id_is_echoed_and_logged(access: _Lines) -> None:
    """The replica echoes nginx's X-Request-ID and writes one access line carrying it and the cache outcome."""
    async with open_api() as api:
        first = await api.client.post("/v1/embeddings", json=EMB, headers={**T123, "X-Request-ID": "abc-1"})
        second = await api.client.post("/v1/embeddings", json=EMB, headers={**T123, "X-Request-ID": "abc-2"})
    assert first.headers["x-request-id"] == "abc-1"
    assert second.headers["x-request-id"] == "abc-2"
    lines = {line["request_id"]: line for line in access.lines}
    assert lines["abc-1"]["cache"] == "MISS"
    assert lines["abc-1"]["upstream_ms"] > 0
    assert lines["abc-2"] | {"total_ms": 0, "upstream_ms": 0} == {
        "request_id": "abc-2",
        "instance": "unit",
        "school": 123,
        "method": "POST",
        "route": "/v1/embeddings",
        "path": "/v1/embeddings",
        "status": 200,
        "cache": "HIT",
        "tier": "memory",
        "upstream_ms": 0,
        "total_ms": 0,
    }
    assert lines["abc-2"]["upstream_ms"] == 0


async def test_a_request_without_an_id_gets_one(access: _Lines) -> None:
    """Without X-Request-ID (or with one unfit to log) the replica makes one, on errors and on 413s too."""
    async with open_api() as api:
        plain = await api.client.get("/healthz")
        odd = await api.client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        big = await api.client.post("/v1/embeddings", content=b"x" * 30_000, headers=T123)
    assert big.status_code == 413
    ids = [r.headers["x-request-id"] for r in (plain, odd, big)]
    assert all(len(i) == 32 for i in ids)
    assert len(set(ids)) == 3
    assert [line["request_id"] for line in access.lines] == ids


def test_request_id_validation() -> None:
    """Ids are echoed only when short and made of plain characters."""
    assert valid_request_id(b"4f0e9c1d2b3a") == "4f0e9c1d2b3a"
    assert valid_request_id(b"") is None
    assert valid_request_id(b"x" * 129) is None
    assert valid_request_id(b"a\r\nb") is None


def test_formatters() -> None:
    """JSON lines put the access fields at top level; text lines are key=value pairs."""
    record = logging.LogRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 1, "%s", ({"request_id": "r1", "status": 200},), None
    )
    parsed = orjson.loads(JsonFormatter().format(record))
    assert parsed["request_id"] == "r1"
    assert parsed["status"] == 200
    assert parsed["logger"] == ACCESS_LOGGER
    assert "request_id=r1 status=200" in TextFormatter().format(record)
    other = logging.LogRecord("rag_api", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    assert orjson.loads(JsonFormatter().format(other))["msg"] == "hello you"


def test_school_labels_are_bounded() -> None:
    """Only the lowest `limit` tenant ids get their own label; everything else is "other"."""
    labels = SchoolLabels(2, [5, 3, 9, 1])
    assert [labels(s) for s in (1, 3, 5, 9, 77)] == ["1", "3", OTHER, OTHER, OTHER]


def test_model_prices_parse_and_count() -> None:
    """MODEL_PRICES parses `model:price`; unpriced models count under "other"; a bad entry fails start-up."""
    prices = ModelPrices({"priced-model": 2.0})
    before = _sample(render().decode(), "rag_model_cost_usd_total", model="priced-model", source="cache")
    prices.count("priced-model", "cache", 500_000)
    prices.count("client-chosen-name", "cache", 10)
    text = render().decode()
    assert _sample(text, "rag_model_cost_usd_total", model="priced-model", source="cache") - before == pytest.approx(
        1.0
    )
    assert 'model="client-chosen-name"' not in text
    assert _sample(text, "rag_model_tokens_total", model=OTHER, source="cache") >= 10


def test_model_prices_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed MODEL_PRICES entry fails start-up naming the variable."""
    monkeypatch.setenv("MODEL_PRICES", "a:0.5, b:1e-3")
    assert load_settings().model_prices == {"a": 0.5, "b": 0.001}
    monkeypatch.setenv("MODEL_PRICES", "a:0.5,b:free")
    with pytest.raises(ConfigError, match="MODEL_PRICES"):
        load_settings()


async def test_exporter_turns_counters_into_metrics() -> None:
    """The exporter adds the growth of the cache counters and sets memory, breaker and Redis gauges."""
    async with open_api() as api:
        exporter = CacheExporter((api.embeddings, api.llm), interval=60)
        await exporter.export()
        base = _sample(render().decode(), "rag_cache_events_total", cache="embedding", event="memory_hits")
        await api.client.post("/v1/embeddings", json=EMB, headers=T123)
        await api.client.post("/v1/embeddings", json=EMB, headers=T123)
        await exporter.export()
        text = render().decode()
    assert _sample(text, "rag_cache_events_total", cache="embedding", event="memory_hits") - base == 2
    assert _sample(text, "rag_cache_memory", cache="embedding", unit="entries") == 2
    assert _sample(text, "rag_cache_breaker_open", cache="embedding") == 0
    assert "rag_redis_up " in text  # fakeredis has no INFO: the live figures are checked in tests/integration


async def test_school_and_outcome_metrics() -> None:
    """Requests count per school label and X-Cache outcome, and the latency histogram carries the outcome."""
    before = render().decode()
    async with open_api() as api:
        await api.client.post("/v1/embeddings", json={**EMB, "input": "gamma"}, headers=T123)
        await api.client.post("/v1/embeddings", json={**EMB, "input": "gamma"}, headers=T123)
    after = render().decode()
    name = "rag_school_requests_total"
    assert _sample(after, name, school="123", cache="HIT") - _sample(before, name, school="123", cache="HIT") == 1
    hist = "rag_http_request_duration_seconds_count"
    grown = _sample(after, hist, route="/v1/embeddings", cache="HIT") - _sample(
        before, hist, route="/v1/embeddings", cache="HIT"
    )
    assert grown == 1


async def test_cached_routes_count_paid_and_saved_tokens() -> None:
    """A miss counts the model's tokens as paid, the same request's hit as saved, priced per MODEL_PRICES."""
    name = "rag_model_tokens_total"
    before = render().decode()
    async with open_api(model_prices={"priced-emb": 1.0}) as api:
        body = {"model": "priced-emb", "input": ["x" * 40, "y" * 80]}
        await api.client.post("/v1/embeddings", json=body, headers=T123)
        await api.client.post("/v1/embeddings", json=body, headers=T123)
    after = render().decode()
    for source in ("upstream", "cache"):
        grown = _sample(after, name, model="priced-emb", source=source) - _sample(
            before, name, model="priced-emb", source=source
        )
        assert grown == 30  # ~4 characters a token: 10 + 20
