"""nginx/proxy.conf in front of a real API process: every error nginx answers itself is JSON `{"detail": ...}`
(never its HTML pages), its version is not shown, and the API's own errors pass through untouched."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from deploy import nginx_conf
from tests.support.errors import error_body
from tests.support.processes import ServiceProcess, Stack
from tests.support.redis_server import RedisServer
from tests.support.wait import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]


class Nginx(ServiceProcess):
    """nginx with the local runtime's generated configuration, in front of `replica_port`."""

    ready_path = "/nginx/healthz"

    def __init__(self, run_dir: Path, replica_port: int) -> None:
        port = free_port()
        conf = nginx_conf.write_local(run_dir=run_dir, listen_port=port, replica_ports=[replica_port])
        super().__init__(["nginx", "-c", str(conf)], port=port, env=os.environ, log_path=run_dir / "nginx.log")
        self.start()

    def raw(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send bytes as they are (clients would refuse to send most of these) and parse the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module")
def live(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    api = Stack(tmp_path_factory.mktemp("nginx-api"), redis_server.url)
    nginx = Nginx(tmp_path_factory.mktemp("nginx-live"), api.api.port)
    yield nginx
    nginx.stop()
    api.stop()


@pytest.fixture(scope="module")
def dead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    nginx = Nginx(tmp_path_factory.mktemp("nginx-dead"), free_port())
    yield nginx
    nginx.stop()


def closing(line: bytes, *headers: bytes) -> bytes:
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in (b"Host: t", b"Connection: close", *headers)) + b"\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"G@T / HTTP/1.1\r\n\r\n", 400),
        (closing(b"GET /healthz HTTP/1.1", b"Host: u"), 400),
        (closing(b"GET /healthz HTTP/1.1", b"Authorization: Bearer a", b"Authorization: Bearer b"), 400),
        (closing(b"FOO /v1/embeddings HTTP/1.1"), 405),
        (closing(b"TRACE / HTTP/1.1"), 405),
        (closing(b"POST /v1/embeddings HTTP/1.1", b"Content-Length: 2000000"), 413),
        (closing(b"GET /" + b"a" * 9000 + b" HTTP/1.1"), 414),
        (closing(b"GET /_nginx_errors/400 HTTP/1.1"), 404),
    ],
)
def test_nginx_errors_are_json(live: Nginx, request_bytes: bytes, status: int) -> None:
    """Malformed requests, unknown methods, big bodies and long URIs get nginx's JSON, without its version."""
    got, headers, body = live.raw(request_bytes)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert headers["server"] == "nginx"
    assert set(orjson.loads(body)) == {"detail"}


def test_no_replica_is_a_json_502(dead: Nginx) -> None:
    """With no replica answering, nginx's 502 is JSON and names the upstream it tried."""
    res = httpx.get(f"http://127.0.0.1:{dead.port}/healthz", timeout=10)
    assert res.status_code == 502
    assert res.headers["content-type"] == "application/json"
    assert error_body("/healthz", res.content) == "no API replica answered"
    assert res.headers["x-upstream-addr"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("DELETE", "/v1/embeddings", 405), ("POST", "/v1/embeddings", 401)],
)
def test_the_apis_own_errors_pass_through(live: Nginx, method: str, path: str, status: int) -> None:
    """Errors the API answers keep their status and body: nginx does not replace them."""
    res = httpx.request(method, f"http://127.0.0.1:{live.port}{path}", timeout=10)
    assert res.status_code == status
    error_body(path, res.content)
    assert "x-instance" in res.headers
