"""The local runtime's generated files and environment (deploy/), without starting anything."""

from __future__ import annotations

import configparser
import json
import shlex
import subprocess
import sys
from pathlib import Path

from deploy import nginx_conf, supervisor_conf
from deploy.apienv import api_env, without_settings
from deploy.topology import ROOT, Topology


def topology(tmp_path: Path, *, scaled: bool = True, replicas: int = 3) -> Topology:
    return Topology(runtime="local", run_dir=tmp_path, scaled=scaled, replicas=replicas, api_port=9001)


def parsed(text: str) -> configparser.RawConfigParser:
    config = configparser.RawConfigParser()
    config.read_string(text)
    return config


def test_shell_wins_over_env_file_and_demo_keys_fill_the_gap(tmp_path: Path) -> None:
    """Settings variables come from the shell first, then `.env`; the demo keys only when neither names keys."""
    env_file = tmp_path / ".env"
    env_file.write_text("CACHE_MAX_SIZE=10\nLOG_LEVEL=debug\nREDIS_URL=redis://elsewhere:1/0\nNOT_A_SETTING=1\n")
    env = api_env({"CACHE_MAX_SIZE": "20", "HOME": "/root"}, env_file)
    assert env["CACHE_MAX_SIZE"] == "20"
    assert env["LOG_LEVEL"] == "debug"
    assert "REDIS_URL" not in env, "the stack's own Redis is set per replica"
    assert "NOT_A_SETTING" not in env
    assert "HOME" not in env
    assert env["TENANT_API_KEYS"] == "demo-school-123:123,demo-school-456:456"
    assert env["ADMIN_API_KEY"] == "demo-admin"
    own_keys = api_env({"TENANT_API_KEYS": "k:7"}, tmp_path / "missing.env")
    assert own_keys["TENANT_API_KEYS"] == "k:7"
    assert "ADMIN_API_KEY" not in own_keys


def test_without_settings_drops_only_settings_variables() -> None:
    """The processes inherit the shell minus Settings variables, which `api_env` decides."""
    assert without_settings({"PATH": "/bin", "REDIS_URL": "x", "PROMETHEUS_MULTIPROC_DIR": "/tmp"}) == {"PATH": "/bin"}


def test_supervisord_conf_runs_the_whole_topology(tmp_path: Path) -> None:
    """Redis with AOF and no autorestart, the stub, N replicas with their own id/metrics/port, and nginx."""
    conf = parsed(supervisor_conf.render(topology(tmp_path)))
    redis = shlex.split(conf.get("program:redis", "command"))
    for pair in (["--appendonly", "yes"], ["--appendfsync", "everysec"], ["--dir", str(tmp_path / "redis")]):
        assert any(redis[i : i + 2] == pair for i in range(len(redis))), pair
    assert conf.get("program:redis", "autorestart") == "false"
    assert conf.get("group:api", "programs") == "api-1,api-2,api-3"
    for i, port in enumerate((9001, 9002, 9003), start=1):
        section = f"program:api-{i}"
        assert f"--bind 127.0.0.1:{port}" in conf.get(section, "command")
        assert conf.get(section, "autorestart") == "true"
        assert conf.get(section, "stopasgroup") == "true"
        env = conf.get(section, "environment")
        assert f'INSTANCE_ID="api-{i}"' in env
        assert f'PROMETHEUS_MULTIPROC_DIR="{tmp_path}/prom/api-{i}"' in env
        assert 'REDIS_URL="redis://127.0.0.1:6379/0"' in env
    assert "daemon" not in conf.get("program:nginx", "command"), "foreground mode is set in nginx.conf"
    assert conf.get("unix_http_server", "file") == str(tmp_path / "supervisor.sock")


def test_single_instance_has_no_nginx(tmp_path: Path) -> None:
    """`make up` (not scaled) runs one replica on the API port and no nginx."""
    conf = parsed(supervisor_conf.render(topology(tmp_path, scaled=False, replicas=1)))
    assert not conf.has_section("program:nginx")
    assert "--bind 127.0.0.1:9001" in conf.get("program:api-1", "command")


def test_local_nginx_conf_lists_every_replica_and_includes_the_shared_file(tmp_path: Path) -> None:
    """Only the upstream server list (and listen) is local; the server/proxy part is the shared file."""
    text = nginx_conf.local_conf(run_dir=tmp_path, listen_port=9080, replica_ports=[9001, 9002, 9003])
    assert [line.split()[1] for line in text.splitlines() if line.strip().startswith("server 127.")] == [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
        "127.0.0.1:9003",
    ]
    assert f"include {nginx_conf.SHARED_CONF};" in text
    assert "listen 127.0.0.1:9080;" in text
    assert "daemon off;" in text
    assert "resolve" not in text, "Debian's nginx 1.22 has no `resolve`"


def test_nginx_conf_check_command_agrees_with_the_committed_file() -> None:
    """`python -m deploy.nginx_conf --check` exits 0 for the committed nginx/docker.conf."""
    done = subprocess.run(
        [sys.executable, "-m", "deploy.nginx_conf", "--check"], cwd=ROOT, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr


def test_info_json_shape(tmp_path: Path) -> None:
    """`info --json` carries the keys the Locust helper reads; the API is nginx when scaled."""
    info = topology(tmp_path).info()
    assert {"runtime", "api_url", "nginx_url", "stub_url", "replica_urls", "redis_url"} <= info.keys()
    assert info["api_url"] == info["nginx_url"] == "http://127.0.0.1:8080"
    assert json.loads(json.dumps(info)) == info
    single = topology(tmp_path, scaled=False, replicas=1).info()
    assert single["api_url"] == "http://127.0.0.1:9001"
    assert single["nginx_url"] is None


def test_state_round_trips(tmp_path: Path) -> None:
    """The topology saved by `up` is what later commands load from the run dir."""
    saved = topology(tmp_path)
    saved.save()
    assert Topology.load(tmp_path) == saved
    saved.forget()
    assert Topology.load(tmp_path) is None
