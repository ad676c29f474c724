"""The local runtime's Redis topologies: ports, node arguments and the settings the API replicas get."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.redis_layout import RedisLayout


def test_standalone_is_one_redis_on_the_stack_port(tmp_path: Path) -> None:
    """Standalone: the `redis` program on STACK_REDIS_PORT (the stack's REDIS_URL carries its password)."""
    layout = RedisLayout("standalone", 6379, tmp_path, "pw")
    assert layout.nodes == {"redis": 6379}
    assert layout.sentinels == {}
    assert layout.api_env() == {"REDIS_MODE": "standalone"}


def test_sentinel_adds_a_replica_and_three_sentinels(tmp_path: Path) -> None:
    """Sentinel: a replica of `redis` on P+1, sentinels on 26379.. for P=6379, each with its own config file."""
    layout = RedisLayout("sentinel", 6379, tmp_path, "s3cret")
    assert layout.nodes == {"redis": 6379, "redis-replica": 6380}
    assert list(layout.sentinels.values()) == [26379, 26380, 26381]
    assert layout.node_args("redis-replica") == ["--replicaof", "127.0.0.1", "6379"]
    assert layout.api_env()["REDIS_SENTINELS"] == "127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381"
    assert layout.api_env()["REDIS_PASSWORD"] == "s3cret"
    assert "s3cret" not in repr(layout)
    layout.prepare()
    conf = tmp_path / "sentinel-2" / "sentinel.conf"
    assert "port 26380" in conf.read_text()
    assert "sentinel monitor mymaster 127.0.0.1 6379 2" in conf.read_text()
    assert 'sentinel auth-pass mymaster "s3cret"' in conf.read_text()
    assert 'masterauth "s3cret"' in layout.auth_conf.read_text()
    assert conf.stat().st_mode & 0o777 == 0o600
    assert layout.auth_conf.stat().st_mode & 0o777 == 0o600


def test_cluster_is_six_nodes_with_their_own_config_files(tmp_path: Path) -> None:
    """Cluster: six cluster-enabled nodes on P..P+5, all named to the API."""
    layout = RedisLayout("cluster", 6379, tmp_path)
    assert list(layout.nodes) == ["redis", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6"]
    assert list(layout.nodes.values()) == list(range(6379, 6385))
    assert "--cluster-enabled" in layout.node_args("redis-4")
    assert str(tmp_path / "redis-4" / "nodes.conf") in layout.node_args("redis-4")
    assert layout.api_env()["REDIS_CLUSTER_NODES"].count("127.0.0.1:") == 6


@pytest.mark.parametrize(("kind", "port"), [("mesh", 6379), ("cluster", 60000), ("sentinel", 50000)])
def test_an_unknown_topology_or_a_port_too_high_fails(tmp_path: Path, kind: str, port: int) -> None:
    """An unknown REDIS_TOPOLOGY, or ports past 65535 (a cluster bus at +10000, sentinels at +20000), fail early."""
    with pytest.raises(ValueError, match=r"REDIS_TOPOLOGY|STACK_REDIS_PORT"):
        RedisLayout(kind, port, tmp_path)
