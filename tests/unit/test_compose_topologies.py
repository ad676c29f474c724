"""The Sentinel and Cluster Compose overrides, alone on the base file and with the scale file: valid Compose
documents whose Redis healthchecks gate the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.compose_file import interpolate, load_compose, merge_compose
from tests.unit.test_compose import BASE, SCALE, schema_errors

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = {"sentinel": ROOT / "docker-compose.sentinel.yml", "cluster": ROOT / "docker-compose.cluster.yml"}


def stack(topology: str, scaled: bool) -> dict[str, Any]:
    document = merge_compose(load_compose(BASE), load_compose(TOPOLOGIES[topology]))
    return merge_compose(document, load_compose(SCALE)) if scaled else document


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_the_topology_files_validate(topology: str, scaled: bool) -> None:
    """Base + topology (+ scale) is a valid Compose document, before and after interpolation."""
    document = stack(topology, scaled)
    for candidate in (document, interpolate(document, {})):
        assert not schema_errors(candidate)
    assert not schema_errors(load_compose(TOPOLOGIES[topology], keep_tags=False))


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_the_api_waits_for_a_ready_topology(topology: str) -> None:
    """Every Redis and sentinel service has a healthcheck the API waits for; none is published on the host."""
    services = stack(topology, scaled=True)["services"]
    redis_services = {name for name in services if name.startswith(("redis", "sentinel"))} - {"redis-cluster-init"}
    depends = services["api"]["depends_on"]
    for name in redis_services:
        assert "healthcheck" in services[name], name
        assert depends[name]["condition"] == "service_healthy", name
        assert "ports" not in services[name], name
    env = services["api"]["environment"]
    assert env["REDIS_MODE"] == topology
    assert env["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")


def test_sentinel_has_a_replica_and_three_sentinels_with_quorum_2() -> None:
    """One replica of `redis`, three sentinels monitoring it with quorum 2, and the API pointed at all three."""
    services = stack("sentinel", scaled=False)["services"]
    sentinels = sorted(name for name in services if name.startswith("sentinel-"))
    assert sentinels == ["sentinel-1", "sentinel-2", "sentinel-3"]
    script = services["sentinel-1"]["command"][-1]
    assert "sentinel monitor $${MASTER} redis 6379 2" in script
    assert "--replicaof redis 6379" in " ".join(services["redis-replica"]["command"])
    assert "ckquorum" in services["sentinel-1"]["healthcheck"]["test"][1]
    api_env = services["api"]["environment"]
    assert api_env["REDIS_SENTINELS"] == ",".join(f"{name}:26379" for name in sentinels)


def test_cluster_has_three_primaries_with_a_replica_each() -> None:
    """Six cluster nodes, created with one replica per primary by a one-shot service the API waits for."""
    services = stack("cluster", scaled=False)["services"]
    nodes = sorted(name for name, s in services.items() if "--cluster-enabled" in s.get("command", []))
    assert nodes == ["redis", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6"]
    init = services["redis-cluster-init"]
    assert "--cluster-replicas 1" in init["command"][-1]
    assert set(init["depends_on"]) == set(nodes)
    assert services["api"]["depends_on"]["redis-cluster-init"]["condition"] == "service_completed_successfully"
    assert services["api"]["environment"]["REDIS_CLUSTER_NODES"] == ",".join(f"{n}:6379" for n in nodes)
    for name in nodes:
        assert "cluster_state:ok" in services[name]["healthcheck"]["test"][1]
