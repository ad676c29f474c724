"""Seeing it work on a local scaled stack (3 replicas behind nginx, MONITORING=1): request ids join nginx's and
one replica's access lines; Debian's Prometheus, which the stack runs, scrapes every replica and each dashboard
query returns data
after a short load; `rag_api.warm` skips what is cached and resumes after a kill; a restarted replica answers
warmed entries from memory.

The tests run in file order against one stack.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy import prometheus_conf
from monitoring.verify import Answer, run_queries, targets
from tests.support.stack import REPO, LocalStack
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

REPLICAS = 3
AUTH = {"Authorization": "Bearer demo-school-123"}
MODEL = "text-embedding-3-small"
PRICES = f"{MODEL}:0.02,gpt-4o-mini:0.6"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The stack with MONITORING=1: Debian's prometheus under supervisord, scraping the 3 replicas."""
    if not (shutil.which("prometheus") or Path("/usr/bin/prometheus").exists()):
        pytest.skip("prometheus is not installed (make system-deps installs Debian's package)")
    env = {"STUB_LATENCY_MS": "5", "STUB_DIM": "32", "MODEL_PRICES": PRICES, "METRICS_INTERVAL": "1", "MONITORING": "1"}
    with LocalStack(tmp_path_factory.mktemp("monitoring"), REPLICAS, env=env).running() as local:
        yield local


@pytest.fixture(scope="module")
def info(stack: LocalStack) -> dict[str, Any]:
    return stack.info()


@pytest.fixture(scope="module")
def prometheus(info: dict[str, Any]) -> str:
    """The stack's Prometheus (`up` waited for it to be ready)."""
    url = info["prometheus_url"]
    assert httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
    return str(url)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def _log_lines(stack: LocalStack, name: str) -> list[str]:
    assert stack.run_dir is not None
    path = stack.run_dir / "logs" / name
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def _replica_lines_with(stack: LocalStack, info: dict[str, Any], request_id: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in info["replica_ids"]:
        for line in _log_lines(stack, f"{name}.log"):
            if request_id in line and line.startswith("{"):
                found.append((name, json.loads(line)))
    return found


def test_request_id_joins_the_nginx_line_and_one_replica_line(
    stack: LocalStack, info: dict[str, Any], client: httpx.Client
) -> None:
    """nginx makes an id (or keeps a plain one of the client's), returns it, logs it, and so does exactly one
    replica, in a JSON access line with the school, route, status and cache outcome."""
    body = {"model": MODEL, "input": "request id probe"}
    made = client.post(f"{info['nginx_url']}/v1/embeddings", json=body, headers=AUTH)
    given = client.post(f"{info['nginx_url']}/v1/embeddings", json=body, headers={**AUTH, "X-Request-ID": "probe-42"})
    assert made.status_code == given.status_code == 200
    request_id = made.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert given.headers["x-request-id"] == "probe-42"
    for rid in (request_id, "probe-42"):
        nginx = wait_until(
            lambda rid=rid: [line for line in _log_lines(stack, "nginx-access.log") if f"rid={rid}" in line],
            timeout=10,
            what=f"nginx access line with {rid}",
        )
        assert len(nginx) == 1
        lines = wait_until(lambda rid=rid: _replica_lines_with(stack, info, rid), timeout=10, what="replica line")
        assert len(lines) == 1, lines
        (replica, line) = lines[0]
        assert line["instance"] == replica
        assert f"upstream={info['replica_urls'][info['replica_ids'].index(replica)].split('//')[1]}" in nginx[0]
        assert {k: line[k] for k in ("school", "route", "status")} == {
            "school": 123,
            "route": "/v1/embeddings",
            "status": 200,
        }
    assert _replica_lines_with(stack, info, request_id)[0][1]["cache"] == "MISS"
    assert _replica_lines_with(stack, info, "probe-42")[0][1]["cache"] == "HIT"


def _short_load(client: httpx.Client, info: dict[str, Any]) -> None:
    schools = [{"Authorization": "Bearer demo-school-123"}, {"Authorization": "Bearer demo-school-456"}]
    for i in range(240):
        text = f"load {i % 40}"
        response = client.post(
            f"{info['nginx_url']}/v1/embeddings", json={"model": MODEL, "input": text}, headers=schools[i % 2]
        )
        assert response.status_code == 200, response.text
    for i in range(30):
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {i % 6}"}]}
        assert client.post(f"{info['nginx_url']}/v1/chat/completions", json=chat, headers=AUTH).status_code == 200


def test_prometheus_scrapes_every_replica_and_every_panel_has_data(
    info: dict[str, Any], prometheus: str, client: httpx.Client
) -> None:
    """Three targets up; after a short load every dashboard query returns series, and the per-replica panels
    one for each replica; the alert rules are loaded and none fires."""
    instances = {url.split("//")[1] for url in info["replica_urls"]}
    wait_until(
        lambda: {t["labels"]["instance"] for t in targets(prometheus) if t["health"] == "up"} == instances,
        timeout=60,
        interval=0.5,
        what="every replica scraped",
    )
    _short_load(client, info)

    def all_have_data() -> list[Answer] | None:
        answers = run_queries(prometheus)
        return answers if all(a.series for a in answers) else None

    try:
        answers = wait_until(all_have_data, timeout=90, interval=1, what="every dashboard query returns data")
    except TimeoutError:
        empty = [(a.panel, a.expr) for a in run_queries(prometheus) if not a.series]
        pytest.fail(f"dashboard queries without data after the load: {empty}")
    per_replica = [a for a in answers if "instance" in a.expr]
    assert per_replica
    for answer in per_replica:
        assert answer.instances == instances, (answer.panel, answer.expr, answer.instances)
    with httpx.Client(timeout=10) as c:
        groups = c.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        firing = c.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    rules = yaml.safe_load(prometheus_conf.RULES_FILE.read_text())["groups"]
    assert loaded == {r.get("alert") or r.get("record") for g in rules for r in g["rules"]}
    assert [a for a in firing if a["state"] == "firing"] == []


def _stub_inputs(client: httpx.Client, info: dict[str, Any]) -> int:
    return int(client.get(f"{info['stub_url']}/stats").json()["embedding_inputs"])


def _warm(info: dict[str, Any], path: Path, state: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "rag_api.warm", str(path), "--school", "123", "--url", info["nginx_url"]]
    argv += ["--key", "demo-admin", "--state", str(state), "--batch", "20", *extra]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    return out


def _inputs(path: Path, prefix: str, n: int = 1000) -> Path:
    path.write_text("".join(json.dumps({"input": f"{prefix} passage {i}"}) + "\n" for i in range(n)))
    return path


def test_warm_skips_what_is_cached(info: dict[str, Any], client: httpx.Client, tmp_path: Path) -> None:
    """1,000 inputs: computed once; a second run finds all of them cached and sends nothing to the model."""
    path = _inputs(tmp_path / "inputs.jsonl", "warm")
    before = _stub_inputs(client, info)
    first = _finish(_warm(info, path, tmp_path / "s1.json", "--rate", "0"))
    assert "1000 sent now (0 already cached, 1000 computed, 0 failed)" in first
    assert _stub_inputs(client, info) - before == 1000
    second = _finish(_warm(info, path, tmp_path / "s2.json", "--rate", "0"))
    assert "1000 sent now (1000 already cached, 0 computed, 0 failed)" in second
    assert _stub_inputs(client, info) - before == 1000


def test_warm_killed_halfway_resumes_without_recomputing(
    info: dict[str, Any], client: httpx.Client, tmp_path: Path
) -> None:
    """SIGKILLed halfway, the rerun does only what is left, and the model sees each input once."""
    path, state = _inputs(tmp_path / "inputs.jsonl", "resume"), tmp_path / "state.json"
    before = _stub_inputs(client, info)
    process = _warm(info, path, state, "--rate", "10", "--concurrency", "2")

    def done() -> int:
        try:
            return len(json.loads(state.read_text())["done"])
        except (OSError, ValueError):
            return 0

    wait_until(lambda: done() >= 25, timeout=60, interval=0.05, what="half the batches done")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert 25 <= done() < 50
    rest = _finish(_warm(info, path, state, "--rate", "0"))
    assert re.search(r"(\d+) done by an earlier run", rest)
    assert "0 failed" in rest
    assert _stub_inputs(client, info) - before == 1000


def test_a_restarted_replica_answers_warmed_entries_from_memory(
    stack: LocalStack, info: dict[str, Any], client: httpx.Client
) -> None:
    """After a restart the replica's memory tier is prewarmed from Redis: its first answers are memory hits."""
    replica = info["replica_urls"][0]
    old = client.get(f"{replica}/cache/stats", headers={"Authorization": "Bearer demo-admin"}).json()
    stack.check("replica-kill", "--index", "1")

    def restarted() -> bool:
        stats = client.get(f"{replica}/cache/stats", headers={"Authorization": "Bearer demo-admin"})
        return stats.status_code == 200 and stats.json()["embedding"]["hits"] < old["embedding"]["hits"]

    wait_until(restarted, timeout=60, interval=0.2, what="replica 1 back after replica-kill")
    tiers = []
    for i in range(0, 1000, 97):
        body = {"model": MODEL, "input": f"warm passage {i}"}
        response = client.post(f"{replica}/v1/embeddings", json=body, headers=AUTH)
        tiers.append((response.headers["x-cache"], response.headers["x-cache-tier"]))
    assert set(tiers) == {("HIT", "memory")}, tiers
