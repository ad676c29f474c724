"""A local-runtime stack on free ports in its own run dir (deploy.client), and every process it ever ran."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from deploy.client import StackClient, free_port_options
from deploy.procs import descendants, start_time
from deploy.topology import ROOT as REPO

__all__ = ["REPO", "LocalStack"]


class LocalStack(StackClient):
    """A local-runtime stack of the test's own (free ports, `run_dir`, no `.env`); `pids()` lists what it runs,
    `destroy()` ends it."""

    def __init__(self, run_dir: Path, replicas: int, env: Mapping[str, str] | None = None) -> None:
        options, ports = free_port_options(run_dir, replicas)
        super().__init__("local", options, env, run_dir=run_dir, ports=ports, replicas=replicas)
        self.seen: dict[int, int | None] = {}

    def up(
        self, replicas: int | None = None, *, scaled: bool = True, workers: int | None = 1, timeout: float = 180
    ) -> dict[str, Any]:
        info = super().up(replicas, scaled=scaled, workers=workers, timeout=timeout)
        self.pids()
        return info

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalStack]:
        """Up for the block, then destroyed; fails when a process outlived `down`."""
        try:
            self.up()
            yield self
        finally:
            survivors = self.destroy()
            assert not survivors, f"processes outlived `down`: {survivors}"

    def supervisord_pid(self) -> int | None:
        assert self.run_dir is not None, "LocalStack.on_free_ports() names the run dir"
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
        return {pid for pid, started in self.seen.items() if started and start_time(pid) == started}

    def destroy(self) -> set[int]:
        """`down`, then SIGKILL anything of ours that survived; returns what had to be killed."""
        self.pids()
        self.run("down", timeout=120)
        survivors = self.leftovers()
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return survivors
