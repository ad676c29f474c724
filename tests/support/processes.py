"""Real stub and API processes on free 127.0.0.1 ports, waited on with a deadline and killed on teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from .wait import free_port, wait_until

__all__ = ["ApiProcess", "ServiceProcess", "Stack", "StubProcess", "api_env"]

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """One child process serving HTTP on `port`; `start()` waits for `ready_path` to answer 200."""

    ready_path = "/healthz"

    def __init__(self, args: list[str], *, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.port = port
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 20.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # A new session, so that stop() can signal gunicorn's workers along with the master.
            self.proc = subprocess.Popen(
                self.args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_until(self._ready, timeout=timeout, what=f"{self.args[:3]} ready on {self.url}{self.ready_path}")
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}\n--- log ---\n{self.log()[-4000:]}") from None

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"process exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        with httpx.Client(timeout=1.0) as client:
            return client.get(self.url + self.ready_path).status_code == 200

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, *, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


class StubProcess(ServiceProcess):
    """`python -m upstream_stub` with the given latency and dimension."""

    def __init__(self, log_dir: Path, *, latency_ms: float = 0, dim: int = 1536, port: int | None = None) -> None:
        port = port or free_port()
        args = [sys.executable, "-m", "upstream_stub", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--latency-ms", str(latency_ms), "--dim", str(dim)]
        super().__init__(args, port=port, env=os.environ, log_path=log_dir / f"stub-{port}.log")

    def stats(self) -> dict[str, int]:
        with httpx.Client(timeout=5.0) as client:
            return dict(client.get(self.url + "/stats").json())

    def reset(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            client.post(self.url + "/stats/reset").raise_for_status()

    def control(self, **knobs: float) -> None:
        with httpx.Client(timeout=5.0) as client:
            client.post(self.url + "/control", json=knobs).raise_for_status()


def api_env(redis_url: str, upstream_url: str, **overrides: str) -> dict[str, str]:
    """The environment of an API process: this one's, without stray settings, plus the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CACHE_", "TENANT_", "ADMIN_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        REDIS_URL=redis_url,
        UPSTREAM_BASE_URL=upstream_url,
        INSTANCE_ID="test-api",
        LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class ApiProcess(ServiceProcess):
    """`rag_api.main:app` under uvicorn (one process) or gunicorn (`workers` > 0), ready when /readyz is 200."""

    ready_path = "/readyz"

    def __init__(self, log_dir: Path, env: Mapping[str, str], *, workers: int = 0, port: int | None = None) -> None:
        port = port or free_port()
        if workers:
            args = [sys.executable, "-m", "gunicorn", "-c", str(REPO / "services/api/gunicorn.conf.py")]
            args += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers), "rag_api.main:app"]
        else:
            args = [sys.executable, "-m", "uvicorn", "rag_api.main:app", "--host", "127.0.0.1"]
            args += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        super().__init__(args, port=port, env=env, log_path=log_dir / f"api-{port}.log")


class Stack:
    """A stub and an API process wired together, for one test module; `stop()` ends both."""

    def __init__(self, log_dir: Path, redis_url: str, *, workers: int = 0, latency_ms: float = 0, **env: str):
        self.stub = StubProcess(log_dir, latency_ms=latency_ms)
        self.stub.start()
        self.api = ApiProcess(log_dir, api_env(redis_url, self.stub.url + "/v1", **env), workers=workers)
        try:
            self.api.start()
        except BaseException:
            self.stub.stop()
            raise

    @property
    def url(self) -> str:
        return self.api.url

    def stop(self) -> None:
        try:
            self.api.stop()
        finally:
            self.stub.stop()
