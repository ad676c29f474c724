"""The local runtime: the stack's topology as processes on 127.0.0.1 under supervisord, files under the run dir."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

from supervisor.xmlrpc import SupervisorTransport

from . import nginx_conf, prometheus_conf, supervisor_conf
from .apienv import api_env, without_settings
from .errors import CommandFailed, NotReady, StackStateError
from .procs import alive
from .readiness import answers, tail, wait_all_behind_nginx, wait_for
from .topology import Topology, ensure_redis_password


class LocalRuntime:
    """Brings a Topology up and down with supervisord, and breaks parts of it on request."""

    def __init__(self, topology: Topology) -> None:
        self.t = topology
        self.run = topology.run_dir
        self.socket = self.run / "supervisor.sock"

    # --- supervisord ---------------------------------------------------------------------------------
    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        """True when this run dir's supervisord answers on its socket."""
        if not self.socket.exists():
            return False
        try:
            return cast(str, self.rpc().getState()["statename"]) == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def processes(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.rpc().getAllProcessInfo())

    def pid_of(self, name: str) -> int:
        info = self.rpc().getProcessInfo(name)
        return int(info["pid"])

    def supervisord_pid(self) -> int | None:
        path = self.run / "supervisord.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    # --- commands ------------------------------------------------------------------------------------
    def up(self, timeout: float) -> None:
        if self.running():
            raise StackStateError(f"a local stack already runs from {self.run}: `make down` first")
        self._prepare()
        self.t.save()
        env = without_settings(os.environ) | api_env(os.environ, self.t.env_file) | {"PYTHONUNBUFFERED": "1"}
        upstream = env.pop("UPSTREAM_BASE_URL", None)
        (self.run / "supervisord.conf").write_text(supervisor_conf.render(self.t, upstream))
        done = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.run / "supervisord.conf")],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise CommandFailed(f"supervisord exited with {done.returncode}", done.stdout + done.stderr)
        wait_for(self.running, timeout=15, what="supervisord answers on its socket")
        self.wait_ready(timeout)

    def _prepare(self) -> None:
        (self.run / "logs").mkdir(parents=True, exist_ok=True)
        ensure_redis_password(self.t, os.environ)
        # The password goes in files (0600), not on command lines, where `ps` would show it.
        self.t.redis_layout.prepare()
        # Metrics files of processes that no longer exist would be summed into the new ones.
        shutil.rmtree(self.run / "prom", ignore_errors=True)
        for name in self.t.replica_ids:
            (self.run / "prom" / name).mkdir(parents=True)
        if self.t.scaled:
            nginx_conf.write_local(run_dir=self.run, listen_port=self.t.nginx_port, replica_ports=self.t.replica_ports)
        if self.t.monitoring:
            prometheus_conf.write_local(self.run / "prometheus", self.t.replica_ports)

    def wait_ready(self, timeout: float) -> None:
        """Redis, the stub, every replica directly, then every replica through nginx; NotReady otherwise."""
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.5, deadline - time.monotonic())

        checks: list[tuple[str, Callable[[], bool]]] = [
            (f"Redis ({self.t.redis_topology}) is ready", self.t.redis_layout.ready),
            ("the stub answers /healthz", partial(answers, f"{self.t.stub_url}/healthz")),
        ]
        checks += [
            (f"{name} answers /readyz", partial(answers, f"{url}/readyz"))
            for name, url in zip(self.t.replica_ids, self.t.replica_urls, strict=True)
        ]
        for what, check in checks:
            wait_for(partial(self._unless_fatal, check), timeout=left(), what=what)
        if self.t.nginx_url:
            wait_all_behind_nginx(self.t.nginx_url, self.t.replicas, timeout=left())
        if self.t.prometheus_url:
            ready = partial(answers, f"{self.t.prometheus_url}/-/ready")
            wait_for(partial(self._unless_fatal, ready), timeout=left(), what="Prometheus answers /-/ready")

    def _unless_fatal(self, check: Callable[[], bool]) -> bool:
        """`check()`, but NotReady at once when supervisord gave up on a program (it kept exiting at start)."""
        fatal = [p["name"] for p in self.processes() if p["statename"] == "FATAL"]
        if fatal:
            raise NotReady(f"{', '.join(fatal)} kept exiting at start-up (supervisord state FATAL)")
        return check()

    def down(self) -> None:
        """Stop every program and supervisord; then SIGKILL any process group that outlived it."""
        groups: set[int] = set()
        supervisord = self.supervisord_pid()
        if self.running():
            groups = {int(p["pid"]) for p in self.processes() if p["pid"]}
            self.rpc().shutdown()
        if supervisord:
            wait_for(lambda: not alive(supervisord), timeout=60, what=f"supervisord (pid {supervisord}) exits")
        for pgid in groups:
            # Children run in their own process groups (supervisord's setpgrp), e.g. gunicorn and its workers.
            try:
                os.killpg(pgid, signal.SIGKILL)
                print(f"killed leftover process group {pgid}")
            except ProcessLookupError:
                pass
        self.t.forget()

    def ps(self) -> str:
        if not self.running():
            return f"local stack from {self.run}: not running"
        rows = [f"{p['name']:<8} {p['statename']:<9} pid={p['pid']:<8} {p['description']}" for p in self.processes()]
        return "\n".join(rows)

    def log_files(self) -> list[Path]:
        layout = self.t.redis_layout
        names = ["supervisord", *layout.nodes, *layout.sentinels, "stub", *self.t.replica_ids]
        if self.t.scaled:
            names += ["nginx", "nginx-error", "nginx-access"]
        if self.t.monitoring:
            names.append("prometheus")
        return [self.run / "logs" / f"{n}.log" for n in names]

    def logs(self, lines: int) -> str:
        return tail(self.log_files(), lines)

    def redis_stop(self) -> str:
        """Stop the current primary gracefully (standalone: the one Redis)."""
        name = self.t.redis_layout.primary()
        self.rpc().stopProcess(name, True)
        return name

    def redis_kill(self) -> str:
        """SIGKILL the current primary and leave it down (autorestart is off for it); Sentinel or the cluster
        promote its replica."""
        name = self.t.redis_layout.primary()
        pid = self.pid_of(name)
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not alive(pid), timeout=10, what=f"redis-server (pid {pid}) is gone")
        wait_for(lambda: self.rpc().getProcessInfo(name)["pid"] == 0, timeout=10, what=f"supervisord saw {name} exit")
        return name

    def redis_start(self, timeout: float = 30) -> None:
        """Start every Redis node that is down, and wait until the topology is usable again."""
        for name in self.t.redis_layout.nodes:
            if not self.pid_of(name):
                self.rpc().startProcess(name, True)
        wait_for(self.t.redis_layout.ready, timeout=timeout, what=f"Redis ({self.t.redis_topology}) is ready")

    def replica_kill(self, index: int) -> str:
        """SIGKILL replica `index` (1-based) with its workers; supervisord starts it again."""
        if not 1 <= index <= self.t.replicas:
            raise StackStateError(f"no api replica {index} (there are {self.t.replicas})")
        name = self.t.replica_ids[index - 1]
        pid = self.pid_of(f"api:{name}")
        if not pid:
            raise StackStateError(f"{name} is not running")
        os.killpg(pid, signal.SIGKILL)
        return f"{name} (pid {pid}, 127.0.0.1:{self.t.replica_ports[index - 1]}) killed; supervisord restarts it"
