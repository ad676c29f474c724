"""A local-runtime stack on free ports in its own run dir (deploy.client), and every process it ever ran."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

from deploy.client import StackClient
from deploy.procs import descendants, start_time
from deploy.topology import ROOT as REPO

__all__ = ["REPO", "LocalStack"]


class LocalStack(StackClient):
    """`StackClient.on_free_ports(...)` for the local runtime; `pids()` lists what it runs, `destroy()` ends it."""

    seen: dict[int, int | None]

    def up(
        self, replicas: int | None = None, *, scaled: bool = True, workers: int | None = 1, timeout: float = 180
    ) -> dict[str, Any]:
        info = super().up(replicas, scaled=scaled, workers=workers, timeout=timeout)
        self.pids()
        return info

    def supervisord_pid(self) -> int | None:
        assert self.run_dir is not None, "LocalStack.on_free_ports() names the run dir"
        try:
            return int((self.run_dir / "supervisord.pid").read_text())
        except (OSError, ValueError):
            return None

    def pids(self) -> set[int]:
        """Every process of the stack now (supervisord and all below it); remembered for `leftovers()`."""
        if not hasattr(self, "seen"):
            self.seen = {}
        root = self.supervisord_pid()
        now = descendants(root) if root and start_time(root) is not None else set()
        self.seen.update({pid: start_time(pid) for pid in now})
        return now

    def leftovers(self) -> set[int]:
        """Processes this stack ever ran that still run (same pid and start time)."""
        return {pid for pid, started in getattr(self, "seen", {}).items() if started and start_time(pid) == started}

    def destroy(self) -> set[int]:
        """`down`, then SIGKILL anything of ours that survived; returns what had to be killed."""
        self.pids()
        self.run("down", timeout=120)
        survivors = self.leftovers()
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return survivors
