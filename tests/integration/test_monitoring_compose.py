"""The monitoring profile for real, where a recent Docker engine answers: `make up-scaled MONITORING=1
RUNTIME=docker` comes up healthy, Prometheus finds every replica by DNS, Grafana serves the provisioned
dashboard over its HTTP API, and a request id is in nginx's log and in exactly one replica's.

Where Grafana's image is the stand-in of monitoring/standins/grafana (no registry on the machine), the
response says so (`X-Grafana-Standin`) and the test checks the provisioning files through it, not Grafana."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.client import StackClient
from deploy.topology import compose_project
from monitoring.dashboard import PANELS
from monitoring.verify import targets
from tests.integration.test_scaled_stack_compose import docker_compose_unavailable, make
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(docker_compose_unavailable()), reason=str(docker_compose_unavailable())),
]

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture
def docker_stack(tmp_path: Path) -> Iterator[StackClient]:
    stack = StackClient.on_free_ports(tmp_path / "run", 3, runtime="docker", env={"MONITORING": "1"})
    project = compose_project(tmp_path / "run", {})
    try:
        yield stack
    finally:
        stack.run("down", timeout=300)
        subprocess.run(
            ["docker", "compose", "-p", project, "--profile", "monitoring", "down", "-v"],
            cwd=REPO, timeout=300, check=False,
        )  # fmt: skip


def test_monitoring_profile_through_make(docker_stack: StackClient) -> None:
    """3 replicas -> 3 Prometheus targets; the provisioned dashboard over Grafana's API; request ids joined."""
    up = make(docker_stack, "up-scaled", "REPLICAS=3", "MONITORING=1", timeout=900)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    info = docker_stack.info()
    prometheus, grafana = info["prometheus_url"], info["grafana_url"]
    wait_until(
        lambda: len([t for t in targets(prometheus) if t["health"] == "up"]) == 3,
        timeout=60,
        interval=1,
        what="Prometheus scrapes the 3 replicas it found by DNS",
    )
    password = Path(info["grafana_password_file"]).read_text().strip()
    assert httpx.get(f"{grafana}/api/health", timeout=5).status_code == 200
    assert httpx.get(f"{grafana}/api/dashboards/uid/rag-cache", timeout=5).status_code == 401, "no anonymous access"
    board = httpx.get(f"{grafana}/api/dashboards/uid/rag-cache", auth=("admin", password), timeout=5)
    assert board.status_code == 200
    assert board.json()["dashboard"]["title"] == "RAG cache API"
    assert len(board.json()["dashboard"]["panels"]) == len(PANELS)
    source = httpx.get(f"{grafana}/api/datasources/uid/prometheus", auth=("admin", password), timeout=5)
    assert source.json()["url"] == "http://prometheus:9090"

    tenant = next(iter(info["keys"]["tenants"]))
    response = httpx.post(
        f"{info['nginx_url']}/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "a request id through Docker"},
        headers={"Authorization": f"Bearer {tenant}"},
        timeout=10,
    )
    request_id = response.headers["x-request-id"]

    def lines(service: str) -> list[str]:
        logs = docker_stack.check("logs", "--lines", "2000")
        plain = (ANSI.sub("", line) for line in logs.splitlines())  # Compose erases lines even without color
        return [line for line in plain if request_id in line and line.split("|")[0].strip().startswith(service)]

    assert len(wait_until(lambda: lines("nginx"), timeout=10, what="nginx's line")) == 1
    assert len(wait_until(lambda: lines("api"), timeout=10, what="a replica's line")) == 1
