"""A local stack of its own for the end-to-end bench: free ports, a temporary run dir, always torn down.

It is deploy.client's stack (`python -m deploy.stack` as a user runs it) plus the process ids the bench needs to
freeze Redis and count each component's CPU time, read from the run dir's supervisord (deploy.local).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rag_api.config import DEMO_ADMIN_KEY, DEMO_TENANT_KEYS

from deploy.client import StackClient
from deploy.errors import StackError, StackStateError
from deploy.local import LocalRuntime
from deploy.procs import children
from deploy.readiness import wait_for as wait
from deploy.topology import Topology

__all__ = ["ADMIN", "TENANT", "BenchStack", "bench_stack", "wait"]

# The bench's stacks run without a `.env` (StackClient.on_free_ports), so their API accepts the demo keys;
# BenchStack.up() checks that against the stack's own configuration.
TENANT = DEMO_TENANT_KEYS.split(",")[0].split(":")[0]
ADMIN = DEMO_ADMIN_KEY


class BenchStack:
    """One local stack (scaled behind nginx or a single API) on free ports under `run_dir`."""

    def __init__(self, run_dir: Path, *, replicas: int, scaled: bool, env: Mapping[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.replicas, self.scaled = replicas, scaled
        self.client = StackClient.on_free_ports(run_dir, replicas, env=env)
        self.info: dict[str, Any] = {}

    def up(self) -> None:
        self.info = self.client.up(self.replicas, scaled=self.scaled, timeout=90)
        keys = self.info.get("keys", {})
        if TENANT not in keys.get("tenants", {}) or keys.get("admin") != ADMIN:
            raise StackStateError(f"the bench's stack does not run with the demo keys: {keys}")

    def down(self) -> None:
        self.client.down(timeout=90)

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
        if topology is None:
            raise StackStateError(f"no stack is up from {self.run_dir}")
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
        self.client.check("redis-kill")

    def redis_start(self) -> None:
        self.client.check("redis-start")


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
            except (StackError, OSError) as exc:
                print(f"  (teardown: {exc})", file=sys.stderr)
