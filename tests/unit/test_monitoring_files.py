"""The monitoring files: alert rules pass `promtool check`/`test rules`, every dashboard query parses, and the
generated dashboard and Prometheus configuration are up to date and valid."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy import prometheus_conf
from monitoring import dashboard

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "monitoring" / "prometheus"
GRAFANA_DIR = ROOT / "monitoring" / "grafana"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (make system-deps installs Debian's prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_alert_rules_are_valid() -> None:
    """`promtool check rules` accepts alerts.yml."""
    result = promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    """`promtool test rules` runs alerts_test.yml: each alert fires when it should and only then."""
    result = promtool("test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}  # fmt: skip
    tested = {t["alertname"] for case in yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
              for t in case.get("alert_rule_test", [])}  # fmt: skip
    assert alerts == tested, f"alerts without a unit test: {alerts - tested}"


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Each panel's PromQL, as a recording rule, passes `promtool check rules` (the PromQL parser)."""
    queries = dashboard.queries()
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(queries)} rules found" in result.stdout


def test_dashboard_file_is_generated_and_current() -> None:
    """rag-cache.json is what monitoring/dashboard.py makes, with one target per query on the provisioned uid."""
    assert dashboard.main(["--check"]) == 0, "run python -m monitoring.dashboard"
    model = json.loads(dashboard.DASHBOARD_FILE.read_text())
    targets = [t for p in model["panels"] for t in p["targets"]]
    assert len(targets) == len(dashboard.queries())
    assert {t["datasource"]["uid"] for t in targets} == {dashboard.DATASOURCE_UID}


def test_grafana_provisioning_matches_the_dashboard() -> None:
    """The provisioned datasource has the dashboard's uid and points at the Compose prometheus service."""
    sources = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["uid"] == dashboard.DATASOURCE_UID
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "rag.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_configs_are_valid(tmp_path: Path) -> None:
    """The Docker file is current and, like the local runtime's, passes `promtool check config`."""
    assert prometheus_conf.main(["--check"]) == 0, "run python -m deploy.prometheus_conf"
    docker = prometheus_conf.docker_config()
    assert docker["scrape_configs"][0]["dns_sd_configs"][0]["names"] == ["api"]
    docker["rule_files"] = [str(prometheus_conf.RULES_FILE)]  # the container's path does not exist here
    for name, config in (("docker", docker), ("local", prometheus_conf.local_config([18001, 18002]))):
        path = tmp_path / f"{name}.yml"
        path.write_text(prometheus_conf.render(config))
        result = promtool("check", "config", str(path))
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_compose_monitoring_profile_mounts_what_the_configs_name() -> None:
    """The Compose services mount the files where the Prometheus config and Grafana provider expect them, and
    Grafana's admin password comes from a secret file, never from the repository."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prometheus, grafana = compose["services"]["prometheus"], compose["services"]["grafana"]
    assert "./monitoring/prometheus:/etc/prometheus/rag:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/rag/prometheus.docker.yml" in prometheus["command"]
    assert prometheus_conf.DOCKER_RULES.startswith("/etc/prometheus/rag/")
    assert "./monitoring/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert compose["secrets"]["grafana_admin_password"]["file"].endswith(":-./.run/grafana-admin-password}")
