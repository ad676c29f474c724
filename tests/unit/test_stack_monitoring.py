"""MONITORING=1 in both runtimes, without starting anything: the local runtime's Prometheus program and
configuration, the Docker runtime's profile and Grafana password, and what `info` says."""

from __future__ import annotations

import configparser
import json
import shlex
import stat
from pathlib import Path

import pytest

from deploy import prometheus_conf, supervisor_conf
from deploy.docker import DockerRuntime, grafana_password
from deploy.local import LocalRuntime
from deploy.topology import Topology


def topology(tmp_path: Path, runtime: str = "local", *, monitoring: bool = True) -> Topology:
    return Topology(
        runtime=runtime, run_dir=tmp_path, scaled=True, replicas=3, api_port=9001, monitoring=monitoring,
        prometheus_port=9191, grafana_port=3131,
    )  # fmt: skip


def test_local_runtime_runs_prometheus_on_the_replicas(tmp_path: Path) -> None:
    """supervisord runs Debian's prometheus on its port with a configuration listing every replica."""
    conf = configparser.RawConfigParser()
    conf.read_string(supervisor_conf.render(topology(tmp_path)))
    command = shlex.split(conf.get("program:prometheus", "command"))
    assert command[0].endswith("prometheus")
    assert "--web.listen-address=127.0.0.1:9191" in command
    assert f"--config.file={tmp_path / 'prometheus' / 'prometheus.yml'}" in command
    written = prometheus_conf.write_local(tmp_path / "prometheus", [9001, 9002, 9003])
    config = json.loads(written.read_text().split("\n", 1)[1])
    targets = [t for group in config["scrape_configs"][0]["static_configs"] for t in group["targets"]]
    assert targets == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    assert config["rule_files"] == [str(prometheus_conf.RULES_FILE)]


def test_without_monitoring_there_is_no_prometheus(tmp_path: Path) -> None:
    """The default stack runs no Prometheus, and `info` names none."""
    plain = topology(tmp_path, monitoring=False)
    assert "program:prometheus" not in supervisor_conf.render(plain)
    assert "prometheus_url" not in plain.info()
    assert "prometheus" not in [p.stem for p in LocalRuntime(plain).log_files()]


def test_info_names_prometheus_and_grafana_where_they_run(tmp_path: Path) -> None:
    """Local: Prometheus only (Grafana has no Debian package); Docker: both, with the password file."""
    local = topology(tmp_path).info()
    assert local["prometheus_url"] == "http://127.0.0.1:9191"
    assert "grafana_url" not in local
    docker = topology(tmp_path, "docker").info()
    assert docker["grafana_url"] == "http://127.0.0.1:3131"
    assert docker["grafana_password_file"] == str(tmp_path / "grafana-admin-password")


def test_docker_runtime_uses_the_monitoring_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker compose --profile monitoring` with the stack's ports and its password file."""
    seen: list[tuple[list[str], dict[str, str]]] = []

    class Done:
        returncode, stdout, stderr = 0, "", ""

    def fake_run(argv: list[str], **kwargs: object) -> Done:
        seen.append((argv, kwargs["env"]))  # type: ignore[arg-type]
        return Done()

    monkeypatch.setattr("deploy.docker.subprocess.run", fake_run)
    DockerRuntime(topology(tmp_path, "docker")).compose("ps")
    DockerRuntime(topology(tmp_path, "docker", monitoring=False)).compose("ps")
    (argv, env), (plain, _) = seen
    assert argv[argv.index("--profile") + 1] == "monitoring"
    assert "--profile" not in plain
    assert (env["PROMETHEUS_PORT"], env["GRAFANA_PORT"]) == ("9191", "3131")
    assert env["GRAFANA_ADMIN_PASSWORD_FILE"] == str(tmp_path / "grafana-admin-password")


def test_grafana_password_is_generated_once(tmp_path: Path) -> None:
    """A random password, written once and kept (Grafana stores the admin password on first start)."""
    path = tmp_path / "run" / "grafana-admin-password"
    grafana_password(path)
    first = path.read_text()
    assert len(first.strip()) >= 24
    assert first.strip() != "admin"
    grafana_password(path)
    assert path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_an_own_grafana_password_file_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GRAFANA_ADMIN_PASSWORD_FILE names the secret instead of the generated one."""
    own = tmp_path / "mine"
    monkeypatch.setenv("GRAFANA_ADMIN_PASSWORD_FILE", str(own))
    assert topology(tmp_path, "docker").grafana_password_file == own
