"""The Compose side for real: Redis's healthcheck command against real redis-cli/redis-server, and
`docker compose up --wait` where a Docker engine answers (skipped, with the reason, elsewhere)."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.compose_file import interpolate, load_compose
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
    """Why the Docker test cannot run here, or None when it can."""
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False).returncode != 0:
            return "no Docker engine answers `docker info`"
        if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=15, check=False).returncode:
            return "the Docker Compose plugin (`docker compose`) is not installed"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the docker client cannot run: {exc!r}"
    return None


@pytest.mark.skipif(bool(docker_compose_unavailable()), reason=str(docker_compose_unavailable()))
def test_docker_compose_scaled_stack_comes_up(tmp_path: Path) -> None:
    """`docker compose ... up --wait` brings 2 replicas behind nginx, both answering /readyz through it."""
    project = f"ragtest-{uuid.uuid4().hex[:8]}"
    nginx_port, stub_port = free_port(), free_port()
    env = {**os.environ, "REPLICAS": "2", "NGINX_PORT": str(nginx_port), "STUB_PORT": str(stub_port)}
    compose = ["docker", "compose", "-p", project, "-f", "docker-compose.yml", "-f", "docker-compose.scale.yml"]
    try:
        up = subprocess.run(
            [*compose, "up", "-d", "--build", "--wait", "--wait-timeout", "300"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        seen: set[str] = set()

        def both_replicas() -> bool:
            answer = httpx.get(f"http://127.0.0.1:{nginx_port}/readyz", timeout=5)
            if answer.status_code == 200:
                seen.add(answer.headers["X-Upstream-Addr"])
            return len(seen) == 2

        wait_until(both_replicas, timeout=60, what="both replicas answer through nginx")
        assert httpx.get(f"http://127.0.0.1:{stub_port}/healthz", timeout=5).status_code == 200
    finally:
        subprocess.run([*compose, "down", "-v", "--remove-orphans"], cwd=REPO, env=env, timeout=300, check=False)
