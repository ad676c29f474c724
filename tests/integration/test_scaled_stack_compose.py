"""The Compose side for real: Redis's healthcheck command against real redis-cli/redis-server, and, where a
recent enough Docker engine and Compose answer (skipped with the reason elsewhere), the Docker runtime through
make: up-scaled, redis-kill, redis-start, replica-kill and down."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.client import StackClient
from deploy.compose_file import interpolate, load_compose
from deploy.docker import docker_unavailable
from deploy.topology import compose_project
from tests.support.redis_server import redis_server_binary
from tests.support.wait import free_port, port_open, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def healthcheck_command() -> str:
    """The redis service's CMD-SHELL healthcheck as the container's shell receives it (`$$` -> `$`)."""
    test = load_compose(REPO / "docker-compose.yml")["services"]["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    return str(interpolate(test[1], {}))


def run_healthcheck(tmp_path: Path, port: int, password: str | None) -> int:
    """Exit status of the healthcheck, with `redis-cli` pointed at 127.0.0.1:`port` (the container's default)."""
    real = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    shim = tmp_path / "bin" / "redis-cli"
    shim.parent.mkdir(exist_ok=True)  # the shim stays for a test to call it directly
    shim.write_text(f'#!/bin/sh\nexec {real} -p {port} "$@"\n')
    shim.chmod(0o755)
    env = {"PATH": f"{shim.parent}:/usr/bin:/bin"} | ({"REDISCLI_AUTH": password} if password else {})
    return subprocess.run(["sh", "-c", healthcheck_command()], env=env, timeout=10, check=False).returncode


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[int]:
    """A real redis-server that requires the password `pw`; yields its port."""
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "pw", "--save", ""],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(port), timeout=10, what="redis-server listens")
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def loading_server() -> Iterator[int]:
    """A TCP server that answers every command as Redis does while it loads its AOF; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    while conn.recv(4096):
                        conn.sendall(b"-LOADING Redis is loading the dataset in memory\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_redis_healthcheck_passes_only_with_the_password(tmp_path: Path, redis_with_password: int) -> None:
    """The healthcheck passes with the right password and fails on NOAUTH (none) or WRONGPASS."""
    assert run_healthcheck(tmp_path, redis_with_password, "pw") == 0
    assert run_healthcheck(tmp_path, redis_with_password, None) != 0
    assert run_healthcheck(tmp_path, redis_with_password, "wrong") != 0


def test_plain_redis_cli_ping_would_not_catch_noauth(tmp_path: Path, redis_with_password: int) -> None:
    """Why the check compares the reply: redis-cli exits 0 even when the reply is a NOAUTH error."""
    done = subprocess.run(
        ["redis-cli", "-p", str(redis_with_password), "ping"], capture_output=True, text=True, timeout=10, check=False
    )
    assert done.returncode == 0
    assert "NOAUTH" in done.stdout


def test_redis_healthcheck_fails_while_loading(tmp_path: Path, loading_server: int) -> None:
    """A Redis answering LOADING (replaying its AOF after a restart) fails the healthcheck."""
    assert run_healthcheck(tmp_path, loading_server, "pw") != 0
    reply = subprocess.run(
        [tmp_path / "bin" / "redis-cli", "ping"], capture_output=True, text=True, timeout=10, check=False
    )
    assert reply.returncode == 0
    assert reply.stdout.startswith("LOADING"), "the check must fail because of the LOADING reply"
    assert run_healthcheck(tmp_path, loading_server, None) != 0


@functools.cache
def docker_compose_unavailable() -> str | None:
    """Why the Docker tests cannot run here (the runtime's own check: engine >= 25, Compose >= 2.24.4), or None."""
    return docker_unavailable()


def make(stack: StackClient, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`make <args> RUNTIME=docker` on `stack` (its run dir and Compose project), as a user types it."""
    env = {**stack.env, "STACK_RUN_DIR": str(stack.run_dir)}
    env |= {f"STACK_{name.upper()}_PORT": str(port) for name, port in stack.ports.items()}
    return subprocess.run(
        ["make", "-s", *args, "RUNTIME=docker"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def docker_stack(tmp_path: Path) -> Iterator[StackClient]:
    """A Docker stack of the test's own (free host ports, its own run dir, so its own Compose project), always
    removed with its volume."""
    stack = StackClient.on_free_ports(tmp_path / "run", 2, runtime="docker")
    project = compose_project(tmp_path / "run", {})
    try:
        yield stack
    finally:
        stack.run("down", timeout=300)
        subprocess.run(["docker", "compose", "-p", project, "down", "-v"], cwd=REPO, timeout=300, check=False)


def health(url: str) -> str:
    return str(httpx.get(f"{url}/cache/health", timeout=5).json()["status"])


@pytest.mark.skipif(bool(docker_compose_unavailable()), reason=str(docker_compose_unavailable()))
def test_docker_scaled_stack_through_make(docker_stack: StackClient) -> None:
    """`make up-scaled RUNTIME=docker` brings 2 replicas behind nginx that share one Redis; `make redis-kill`,
    `redis-start` and `replica-kill` break and heal it with requests still answered; `make down` removes it."""
    stack = docker_stack
    up = make(stack, "up-scaled", "REPLICAS=2", timeout=900)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert "runtime: docker" in up.stderr
    info = stack.info()
    nginx, tenant = info["nginx_url"], next(iter(info["keys"]["tenants"]))

    def embed(text: str) -> httpx.Response:
        body = {"model": "text-embedding-3-small", "input": text}
        return httpx.post(
            f"{nginx}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {tenant}"}, timeout=10
        )

    text = f"docker {uuid.uuid4()}"
    answers = [embed(text) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    assert answers[0].headers["X-Cache"] == "MISS"
    assert len({a.headers["X-Instance"] for a in answers}) == 2, "nginx spreads requests over both replicas"
    assert any(a.headers["X-Cache-Tier"] == "redis" for a in answers[1:]), "the other replica shares the entry"
    assert httpx.get(f"{info['stub_url']}/healthz", timeout=5).status_code == 200

    killed = make(stack, "redis-kill")
    assert killed.returncode == 0, killed.stderr
    assert embed(f"while down {uuid.uuid4()}").status_code == 200
    wait_until(lambda: health(nginx) == "degraded", timeout=10, what="a replica reports degraded")

    started = make(stack, "redis-start", timeout=180)
    assert started.returncode == 0, started.stderr
    wait_until(lambda: {health(nginx) for _ in range(4)} == {"healthy"}, timeout=20, what="replicas healthy again")

    replica = make(stack, "replica-kill")
    assert replica.returncode == 0, replica.stderr
    project = info["compose_project"]
    assert project.startswith("rag-cache-"), "a run dir of its own is a Compose project of its own"
    assert f"{project}-api-1 killed" in replica.stdout, "index 1 is the container named api-1"
    assert all(embed(f"after kill {i}").status_code == 200 for i in range(6)), "nginx retries on the other replica"
    seen: set[str] = set()

    def both_back() -> bool:
        seen.update(embed(f"back {uuid.uuid4()}").headers["X-Upstream-Addr"].split(",")[-1].strip() for _ in range(4))
        return len(seen) >= 2

    wait_until(both_back, timeout=90, interval=0.5, what="both replicas answer through nginx again")

    down = make(stack, "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert "runtime: docker" in down.stderr
    left = subprocess.run(["docker", "compose", "-p", project, "ps", "-aq"], capture_output=True, text=True, timeout=60)
    assert left.stdout.strip() == "", "make down removed every container"
    assert not port_open(stack.ports["nginx"])
