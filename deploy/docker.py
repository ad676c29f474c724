"""The Docker runtime: docker-compose.yml (+ the Redis topology's override, + docker-compose.scale.yml) through
`docker compose`. The topology's Redis services carry the local runtime's program names (`redis_layout.py`)."""

from __future__ import annotations

import os
import subprocess

from .readiness import answers, wait_all_behind_nginx, wait_for
from .topology import ROOT, Topology


def engine_answers() -> bool:
    """True when `docker info` reaches an engine within a few seconds."""
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class DockerRuntime:
    """The same commands as LocalRuntime, mapped onto Compose."""

    def __init__(self, topology: Topology) -> None:
        self.t = topology

    def compose(self, *args: str, capture: bool = False) -> str:
        files = ["-f", "docker-compose.yml"]
        if self.t.redis_topology != "standalone":
            files += ["-f", f"docker-compose.{self.t.redis_topology}.yml"]
        files += ["-f", "docker-compose.scale.yml"] if self.t.scaled else []
        env = os.environ | {
            "REPLICAS": str(self.t.replicas),
            "API_PORT": str(self.t.api_port),
            "NGINX_PORT": str(self.t.nginx_port),
            "STUB_PORT": str(self.t.stub_port),
        }
        done = subprocess.run(
            ["docker", "compose", *files, *args], cwd=ROOT, env=env, check=True, text=True, capture_output=capture
        )
        return done.stdout if capture else ""

    def up(self, timeout: float) -> None:
        self.t.save()
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
            except subprocess.CalledProcessError:
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

    def replica_kill(self, index: int) -> str:
        """SIGKILL one api container, then start it again (Docker treats a kill as a manual stop)."""
        ids = self.compose("ps", "-q", "api", capture=True).split()
        if not 1 <= index <= len(ids):
            raise SystemExit(f"no api replica {index} (there are {len(ids)})")
        container = sorted(ids)[index - 1]
        subprocess.run(["docker", "kill", "--signal", "KILL", container], check=True, capture_output=True)
        subprocess.run(["docker", "start", container], check=True, capture_output=True)
        return f"api container {container[:12]} killed and started again"
