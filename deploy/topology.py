"""What a running stack is (runtime, ports, replicas) and how it is remembered between commands."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import StackStateError
from .redis_layout import RedisLayout

ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "stack.json"
PASSWORD_FILE = "redis-password"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Topology:
    """The ports and shape of one stack; replicas listen on api_port, api_port + 1, ... (local runtime)."""

    runtime: str
    run_dir: Path
    scaled: bool = False
    replicas: int = 1
    api_port: int = 8001
    nginx_port: int = 8080
    stub_port: int = 8090
    redis_port: int = 6379
    workers: int | None = None
    env_file: Path = ROOT / ".env"
    # Docker: the Compose project (container, network and volume names). See compose_project().
    project: str = "rag-cache"
    # Redis's maxmemory (REDIS_MAXMEMORY), in both runtimes: small values let a test fill it quickly.
    redis_maxmemory: str = "512mb"
    redis_topology: str = "standalone"  # REDIS_TOPOLOGY: standalone, sentinel or cluster (see redis_layout.py)
    # MONITORING=1: Prometheus (both runtimes) and Grafana (Docker only; Grafana has no Debian package).
    monitoring: bool = False
    prometheus_port: int = 9090
    grafana_port: int = 3000

    @property
    def replica_ids(self) -> list[str]:
        return [f"api-{i}" for i in range(1, self.replicas + 1)]

    @property
    def replica_ports(self) -> list[int]:
        return [self.api_port + i for i in range(self.replicas)]

    @property
    def stub_url(self) -> str:
        return f"http://127.0.0.1:{self.stub_port}"

    @property
    def nginx_url(self) -> str | None:
        return f"http://127.0.0.1:{self.nginx_port}" if self.scaled else None

    @property
    def replica_urls(self) -> list[str]:
        if self.runtime == "docker" and self.scaled:
            return []  # replicas are reachable on the Compose network only, through nginx
        return [f"http://127.0.0.1:{p}" for p in self.replica_ports]

    @property
    def prometheus_url(self) -> str | None:
        return f"http://127.0.0.1:{self.prometheus_port}" if self.monitoring else None

    @property
    def grafana_url(self) -> str | None:
        return f"http://127.0.0.1:{self.grafana_port}" if self.monitoring and self.runtime == "docker" else None

    @property
    def grafana_password_file(self) -> Path:
        """Grafana's admin password file (the Compose secret): GRAFANA_ADMIN_PASSWORD_FILE when set, else one the
        Docker runtime generates in the run dir."""
        chosen = os.environ.get("GRAFANA_ADMIN_PASSWORD_FILE")
        return Path(chosen) if chosen else self.run_dir / "grafana-admin-password"

    @property
    def api_url(self) -> str:
        return self.nginx_url or f"http://127.0.0.1:{self.api_port}"

    @property
    def redis_password(self) -> str:
        """The stack's Redis password (see ensure_redis_password), "" before the stack was first brought up."""
        try:
            return (self.run_dir / PASSWORD_FILE).read_text().strip()
        except OSError:
            return ""

    @property
    def redis_layout(self) -> RedisLayout:
        return RedisLayout(self.redis_topology, self.redis_port, self.run_dir, self.redis_password)

    @property
    def redis_url(self) -> str:
        if self.runtime == "docker":
            return "redis://redis:6379/0 (Compose network only; `docker compose exec redis redis-cli`)"
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    def info(self) -> dict[str, Any]:
        """What `stack.py info --json` prints; the Locust helper and the tests read it."""
        return {
            "runtime": self.runtime,
            "api_url": self.api_url,
            "nginx_url": self.nginx_url,
            "stub_url": self.stub_url,
            "replica_urls": self.replica_urls,
            "replica_ids": self.replica_ids if self.runtime == "local" else [],
            "redis_url": self.redis_url,
            "redis_topology": self.redis_topology,
            "replicas": self.replicas,
            "scaled": self.scaled,
            "run_dir": str(self.run_dir),
            **({"compose_project": self.project} if self.runtime == "docker" else {}),
            **({"prometheus_url": self.prometheus_url} if self.monitoring else {}),
            **(
                {"grafana_url": self.grafana_url, "grafana_password_file": str(self.grafana_password_file)}
                if self.grafana_url
                else {}
            ),
        }

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}
        (self.run_dir / STATE_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> Topology | None:
        """The stack last brought up from `run_dir`, or None."""
        path = run_dir / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["run_dir"], data["env_file"] = Path(data["run_dir"]), Path(data["env_file"])
        return cls(**data)

    def forget(self) -> None:
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)


def compose_project(run_dir: Path, environ: Mapping[str, str]) -> str:
    """The Compose project of a stack: COMPOSE_PROJECT_NAME when set; `rag-cache` (the Compose file's name) for
    the default run dir; else one named after the run dir, so that stacks from two run dirs on one engine
    (two checkouts, a test's own stack) never take over each other's containers, as local stacks never share."""
    if environ.get("COMPOSE_PROJECT_NAME"):
        return environ["COMPOSE_PROJECT_NAME"]
    if run_dir.resolve() == (ROOT / ".run").resolve():
        return "rag-cache"
    return f"rag-cache-{hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]}"


def ensure_redis_password(topology: Topology, environ: Mapping[str, str]) -> str:
    """The stack's Redis password, kept in its run dir (mode 0600) for every later command: REDIS_PASSWORD from
    the shell or `.env` when set, else one made on the stack's first command, so no stack runs on a password
    published in this repository (nor, locally, on none)."""
    chosen = environ.get("REDIS_PASSWORD") or _env_file_value(topology.env_file, "REDIS_PASSWORD")
    kept = topology.run_dir / PASSWORD_FILE
    if not chosen and kept.exists():
        return kept.read_text().strip()
    topology.run_dir.mkdir(parents=True, exist_ok=True)
    kept.touch(mode=0o600)
    kept.chmod(0o600)
    kept.write_text(chosen or secrets.token_urlsafe(24))
    return kept.read_text().strip()


def _env_file_value(env_file: Path, name: str) -> str:
    if not env_file.exists():
        return ""
    for line in env_file.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == name:
            return value.strip().strip("'\"")
    return ""


def redis_maxmemory(environ: Mapping[str, str]) -> str:
    """REDIS_MAXMEMORY as Redis reads it (bytes, or a number with kb/mb/gb), checked before anything starts."""
    value = environ.get("REDIS_MAXMEMORY", "512mb").strip().lower()
    if not re.fullmatch(r"\d+(kb|mb|gb|k|m|g|b)?", value):
        raise StackStateError(f"REDIS_MAXMEMORY must be a number of bytes, optionally with kb, mb or gb: {value!r}")
    return value


def default_ports() -> dict[str, int]:
    """Default ports, overridable by STACK_* variables (the CLI options override both)."""
    return {
        "api_port": _env_int("STACK_API_PORT", 8001),
        "nginx_port": _env_int("STACK_NGINX_PORT", 8080),
        "stub_port": _env_int("STACK_STUB_PORT", 8090),
        "redis_port": _env_int("STACK_REDIS_PORT", 6379),
        "prometheus_port": _env_int("STACK_PROMETHEUS_PORT", 9090),
        "grafana_port": _env_int("STACK_GRAFANA_PORT", 3000),
    }
