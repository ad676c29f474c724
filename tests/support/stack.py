"""A local-runtime stack on free ports in its own run dir, driven through deploy/stack.py as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from deploy.ports import stack_ports

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "stack.py"


def descendants(root: int) -> set[int]:
    """`root` and every process below it, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (with the pid, an identity that pid reuse cannot fake)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if stat[0] == "Z" else int(stat[19])


class LocalStack:
    """`deploy/stack.py --runtime local` with a private run dir and free ports; `pids()` lists what it runs."""

    def __init__(self, run_dir: Path, replicas: int, env: dict[str, str] | None = None) -> None:
        ports = stack_ports(replicas)
        self.ports = ports
        self.run_dir = run_dir
        self.replicas = replicas
        self.options = ["--run-dir", str(run_dir), "--env-file", str(run_dir / "no.env")]
        self.options += [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
        self.env = {**os.environ, **(env or {})}
        self.seen: dict[int, int | None] = {}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(STACK), "--runtime", "local", *self.options, *args]
        return subprocess.run(
            argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def check(self, *args: str, timeout: float = 120) -> str:
        done = self.cli(*args, timeout=timeout)
        assert done.returncode == 0, f"stack.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def up(self, *, workers: int = 1) -> dict[str, Any]:
        self.check("up", "--scaled", "--replicas", str(self.replicas), "--workers", str(workers), timeout=180)
        self.pids()
        return self.info()

    def info(self) -> dict[str, Any]:
        return dict(json.loads(self.check("info", "--json")))

    def supervisord_pid(self) -> int | None:
        try:
            return int((self.run_dir / "supervisord.pid").read_text())
        except (OSError, ValueError):
            return None

    def pids(self) -> set[int]:
        """Every process of the stack now (supervisord and all below it); remembered for `leftovers()`."""
        root = self.supervisord_pid()
        now = descendants(root) if root and start_time(root) is not None else set()
        self.seen.update({pid: start_time(pid) for pid in now})
        return now

    def leftovers(self) -> set[int]:
        """Processes this stack ever ran that still run (same pid and start time)."""
        return {pid for pid, started in self.seen.items() if started is not None and start_time(pid) == started}

    def destroy(self) -> set[int]:
        """`down`, then SIGKILL anything of ours that survived; returns what had to be killed."""
        self.pids()
        self.cli("down", timeout=120)
        survivors = self.leftovers()
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return survivors
