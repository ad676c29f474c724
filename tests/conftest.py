"""Fixtures every test folder shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import ClusterTopology, SentinelTopology


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that break it use `own_redis` instead."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied before each test."""
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone, free to be killed, frozen and restarted."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    if server.proc is not None:
        server.thaw()
    server.stop()


T = TypeVar("T", SentinelTopology, ClusterTopology)


def _running(topology: T) -> Iterator[T]:
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def sentinel_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """A primary, a replica and three sentinels for the session; tests that fail it over start their own."""
    yield from _running(SentinelTopology(tmp_path_factory.mktemp("sentinel")))


@pytest.fixture(scope="session")
def cluster_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    """Three primaries with a replica each for the session; tests that fail one over start their own."""
    yield from _running(ClusterTopology(tmp_path_factory.mktemp("cluster")))
