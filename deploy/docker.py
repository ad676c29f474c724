"""The Docker runtime: docker-compose.yml (+ docker-compose.scale.yml) through `docker compose`.

It needs the standard library only (no venv): `make up-scaled RUNTIME=docker` runs it with the system's python3.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from pathlib import Path

from .errors import CommandFailed, RuntimeUnavailable, StackStateError
from .readiness import answers, wait_all_behind_nginx, wait_for
from .topology import ROOT, Topology, ensure_redis_password

# healthcheck.start_interval needs Engine >= 25; `!reset` and `env_file.required` need Compose >= 2.24.4.
MIN_ENGINE = (25, 0)
MIN_COMPOSE = (2, 24, 4)


def _version(text: str) -> tuple[int, ...]:
    """(26, 1, 5) from '26.1.5+dfsg1', 'v2.26.1-4', ...; () when there is no number."""
    match = re.search(r"(\d+(?:\.\d+)*)", text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _ask(*args: str) -> str | None:
    """stdout of `docker <args>`, or None when docker is missing, fails or hangs."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def docker_unavailable() -> str | None:
    """Why the Docker runtime cannot run here (no engine, engine or Compose too old), or None when it can."""
    engine = _ask("version", "--format", "{{.Server.Version}}")
    if engine is None:
        return "no Docker engine answers `docker version`"
    if _version(engine) < MIN_ENGINE:
        return f"Docker Engine {engine} is older than {'.'.join(map(str, MIN_ENGINE))} (healthcheck.start_interval)"
    compose = _ask("compose", "version", "--short")
    if compose is None:
        return "the Docker Compose plugin (`docker compose`) is not installed"
    if _version(compose) < MIN_COMPOSE:
        return f"Docker Compose {compose} is older than {'.'.join(map(str, MIN_COMPOSE))} (`!reset`, env_file.required)"
    return None


def grafana_password(path: Path) -> None:
    """Grafana's admin password, generated once into `path` (the Compose secret): never a default one. Readable
    by all (0644): Grafana runs as its own user in the container, and Compose file secrets keep the host's mode."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o644)


class DockerRuntime:
    """The same commands as LocalRuntime, mapped onto Compose."""

    def __init__(self, topology: Topology) -> None:
        self.t = topology

    def compose(self, *args: str, capture: bool = False) -> str:
        """`docker compose <args>` on this stack's files; CommandFailed (with its output) when it fails."""
        files = ["-f", "docker-compose.yml"]
        if self.t.redis_topology != "standalone":  # its Redis services carry redis_layout.py's program names
            files += ["-f", f"docker-compose.{self.t.redis_topology}.yml"]
        files += ["-f", "docker-compose.scale.yml"] if self.t.scaled else []
        env = os.environ | {
            "COMPOSE_PROJECT_NAME": self.t.project,
            "REPLICAS": str(self.t.replicas),
            "API_PORT": str(self.t.api_port),
            "NGINX_PORT": str(self.t.nginx_port),
            "STUB_PORT": str(self.t.stub_port),
            "REDIS_PASSWORD": ensure_redis_password(self.t, os.environ),
            "REDIS_MAXMEMORY": self.t.redis_maxmemory,
            "PROMETHEUS_PORT": str(self.t.prometheus_port),
            "GRAFANA_PORT": str(self.t.grafana_port),
            "GRAFANA_ADMIN_PASSWORD_FILE": str(self.t.grafana_password_file),
        }
        # The monitoring profile (Prometheus, Grafana): docker-compose.yml's `profiles: [monitoring]` services.
        profile = ["--profile", "monitoring"] if self.t.monitoring else []
        argv = ["docker", "compose", *files, *profile, *args]
        try:
            # Not captured unless asked: `up --build` shows its progress as it goes.
            done = subprocess.run(argv, cwd=ROOT, env=env, text=True, capture_output=capture, check=False)
        except OSError as exc:
            raise RuntimeUnavailable(f"cannot run docker: {exc}") from exc
        if done.returncode != 0:
            output = (done.stdout or "") + (done.stderr or "")
            raise CommandFailed(f"`docker compose {' '.join(args)}` exited with {done.returncode}", output[-4000:])
        return done.stdout if capture else ""

    def up(self, timeout: float) -> None:
        why = docker_unavailable()
        if why:
            raise RuntimeUnavailable(f"{why}; RUNTIME=local runs the same stack without Docker")
        self.t.save()
        if self.t.monitoring:
            grafana_password(self.t.grafana_password_file)
        self.compose("up", "-d", "--build", "--wait", "--wait-timeout", str(int(timeout)), "--remove-orphans")
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        if self.t.nginx_url:
            wait_all_behind_nginx(self.t.nginx_url, self.t.replicas, timeout=timeout)
        else:
            wait_for(lambda: answers(f"{self.t.api_url}/readyz"), timeout=timeout, what="the API answers /readyz")

    def down(self) -> None:
        self.compose("down", "--remove-orphans")  # the redis-data volume is kept, like the local data dir
        self.t.forget()

    def ps(self) -> str:
        return self.compose("ps", capture=True)

    def logs(self, lines: int) -> str:
        return self.compose("logs", "--no-color", "--tail", str(lines), capture=True)

    def primary(self) -> str:
        """The Redis service that is a primary now (`redis` in a standalone stack)."""
        for name in self.t.redis_layout.nodes:
            try:
                role = self.compose("exec", "-T", name, "redis-cli", "info", "replication", capture=True)
            except CommandFailed:
                continue  # stopped or killed
            if "role:master" in role:
                return name
        return "redis"

    def redis_stop(self) -> str:
        name = self.primary()
        self.compose("stop", name)
        return name

    def redis_kill(self) -> str:
        name = self.primary()
        self.compose("kill", "-s", "SIGKILL", name)
        return name

    def redis_start(self, timeout: float = 60) -> None:
        nodes = list(self.t.redis_layout.nodes)
        self.compose("up", "-d", "--no-deps", "--wait", "--wait-timeout", str(int(timeout)), *nodes)

    def replicas(self) -> list[str]:
        """The api containers' names in replica order (rag-cache-api-1, -2, ..., -10: by number, not as text)."""
        out = self.compose("ps", "--format", "json", "api", capture=True).strip()
        # Compose >= 2.21 prints one JSON object a line; older versions printed one array.
        rows = json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines()]
        names = [str(row["Name"]) for row in rows if row.get("Name")]
        return sorted(names, key=lambda name: int(name.rsplit("-", 1)[1]) if name[-1].isdigit() else 0)

    def replica_kill(self, index: int) -> str:
        """SIGKILL replica `index` (1-based, as in its name), then start it again (Docker treats a kill as a
        manual stop, which `restart: unless-stopped` leaves alone)."""
        names = self.replicas()
        if not 1 <= index <= len(names):
            raise StackStateError(f"no api replica {index} (there are {len(names)})")
        name = names[index - 1]
        for action in (["kill", "--signal", "KILL", name], ["start", name]):
            done = subprocess.run(["docker", *action], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise CommandFailed(f"`docker {' '.join(action)}` exited with {done.returncode}", done.stderr)
        return f"{name} killed and started again"
