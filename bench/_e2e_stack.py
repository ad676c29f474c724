"""A local stack of its own for the end-to-end bench: free ports, a temporary run dir, always torn down.

It drives deploy/stack.py as a user would and reads process ids from the run dir's supervisord
(deploy.local.LocalRuntime), so the bench can freeze Redis and count each component's CPU time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploy.local import LocalRuntime
from deploy.ports import stack_ports
from deploy.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "stack.py"
# Public demo keys (.env.example); the bench's stack never reads the developer's .env.
TENANT = "demo-school-123"
ADMIN = "demo-admin"


def wait(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll until `predicate()` is truthy, or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # a check that raises is simply "not yet"
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        time.sleep(interval)


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


class BenchStack:
    """One local stack (scaled behind nginx or a single API) on free ports under a temporary run dir."""

    def __init__(self, run_dir: Path, *, replicas: int, scaled: bool, env: dict[str, str] | None = None) -> None:
        ports = stack_ports(replicas)
        self.run_dir = run_dir
        self.replicas, self.scaled = replicas, scaled
        self.options = ["--runtime", "local", "--run-dir", str(run_dir), "--env-file", str(run_dir / "no.env")]
        self.options += [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
        self.env = {**os.environ, **(env or {})}
        self.info: dict[str, Any] = {}

    def cli(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [sys.executable, str(STACK), *self.options, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"stack.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def up(self) -> None:
        args = ["up", "--replicas", str(self.replicas)] + (["--scaled"] if self.scaled else [])
        self.cli(*args, "--timeout", "60")
        self.info = json.loads(self.cli("info", "--json"))

    def down(self) -> None:
        self.cli("down", timeout=90)

    @property
    def url(self) -> str:
        return str(self.info["api_url"])

    @property
    def replica_urls(self) -> list[str]:
        return list(self.info["replica_urls"])

    @property
    def stub_url(self) -> str:
        return str(self.info["stub_url"])

    @property
    def redis_port(self) -> int:
        return int(str(self.info["redis_url"]).rsplit(":", 1)[1].split("/")[0])

    def runtime(self) -> LocalRuntime:
        topology = Topology.load(self.run_dir)
        assert topology is not None, "the stack is not up"
        return LocalRuntime(topology)

    def pid(self, program: str) -> int:
        return self.runtime().pid_of(program)

    def pids(self) -> dict[str, list[int]]:
        """Process ids per component: nginx (master and workers), each replica's gunicorn, redis, stub."""
        rt = self.runtime()
        groups: dict[str, list[int]] = {"redis": [rt.pid_of("redis")], "stub": [rt.pid_of("stub")]}
        api: list[int] = []
        for name in rt.t.replica_ids:
            master = rt.pid_of(f"api:{name}")
            api += [master, *children(master)]
        groups["api"] = api
        if self.scaled:
            nginx = rt.pid_of("nginx")
            groups["nginx"] = [nginx, *children(nginx)]
        return groups

    def workers(self) -> list[int]:
        """The gunicorn worker processes (the ones serving requests), one list across replicas."""
        rt = self.runtime()
        return [w for name in rt.t.replica_ids for w in children(rt.pid_of(f"api:{name}"))]

    def redis_signal(self, sig: signal.Signals) -> None:
        """SIGSTOP/SIGCONT the stack's redis-server (its pid from the run dir's supervisord)."""
        os.kill(self.pid("redis"), sig)

    def redis_kill(self) -> None:
        self.cli("redis-kill")

    def redis_start(self) -> None:
        self.cli("redis-start")


@contextmanager
def bench_stack(*, replicas: int, scaled: bool, env: dict[str, str] | None = None) -> Iterator[BenchStack]:
    """A stack that is up for the `with` body and down afterwards, whatever happened."""
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        stack = BenchStack(Path(tmp) / "run", replicas=replicas, scaled=scaled, env=env)
        try:
            stack.up()
            yield stack
        finally:
            try:
                stack.down()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"  (teardown: {exc})", file=sys.stderr)
