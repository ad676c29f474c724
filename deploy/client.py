"""The one client of a stack for tests, bench/ and loadtest/: `python -m deploy.stack` run as a user runs it.

`StackClient(runtime, options)` drives the stack those CLI options name (default: the one `make up` started);
`StackClient.on_free_ports(run_dir, replicas)` names a stack of the caller's own (free ports, its own run dir,
no `.env`: the demo keys), and `own_stack()` brings such a stack up and always takes it down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import CommandFailed
from .ports import stack_ports
from .topology import ROOT


def free_port_options(run_dir: Path, replicas: int) -> tuple[list[str], dict[str, int]]:
    """CLI options for a stack of one's own (free ports, `run_dir`, no `.env`), and the ports chosen."""
    ports = stack_ports(replicas)
    options = ["--run-dir", str(run_dir), "--env-file", str(run_dir / "no.env")]
    options += [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    return options, ports


class StackClient:
    """`python -m deploy.stack --runtime R <options> <command>`; `check()` raises CommandFailed with the output."""

    def __init__(
        self,
        runtime: str = "auto",
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        run_dir: Path | None = None,
        ports: Mapping[str, int] | None = None,
        replicas: int = 1,
    ) -> None:
        self.runtime = runtime
        self.options = list(options)
        self.env = {**os.environ, **(env or {})}
        # What on_free_ports chose (for callers that check URLs or ports); empty for a stack named by `options`.
        self.run_dir, self.ports, self.replicas = run_dir, dict(ports or {}), replicas

    @staticmethod
    def on_free_ports(
        run_dir: Path, replicas: int, *, runtime: str = "local", env: Mapping[str, str] | None = None
    ) -> StackClient:
        """A client for a stack of the caller's own: free ports, `run_dir`, and no `.env` (the demo keys)."""
        options, ports = free_port_options(run_dir, replicas)
        return StackClient(runtime, options, env, run_dir=run_dir, ports=ports, replicas=replicas)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "deploy.stack", "--runtime", self.runtime, *self.options, *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The command's result, whatever its exit status."""
        return subprocess.run(
            self.argv(*args), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def check(self, *args: str, timeout: float = 120) -> str:
        """The command's stdout; CommandFailed (carrying stdout and stderr) when it exits non-zero."""
        done = self.run(*args, timeout=timeout)
        if done.returncode != 0:
            raise CommandFailed(
                f"python -m deploy.stack {' '.join(args)} exited with {done.returncode}", done.stdout + done.stderr
            )
        return done.stdout

    def up(
        self, replicas: int | None = None, *, scaled: bool = True, workers: int | None = None, timeout: float = 180
    ) -> dict[str, Any]:
        """Bring the stack up (`replicas`, default the client's) and return its `info`."""
        args = ["up", "--replicas", str(replicas or self.replicas), *(["--scaled"] if scaled else [])]
        args += ["--workers", str(workers)] if workers else []
        self.check(*args, "--timeout", str(int(timeout * 2 / 3)), timeout=timeout)
        return self.info()

    def info(self) -> dict[str, Any]:
        """`info --json`: the running stack's URLs and the keys its API accepts."""
        return dict(json.loads(self.check("info", "--json", timeout=30)))

    def down(self, timeout: float = 120) -> None:
        self.check("down", timeout=timeout)


@contextmanager
def own_stack(
    run_dir: Path, replicas: int, *, scaled: bool = True, workers: int | None = None, runtime: str = "local",
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[StackClient, dict[str, Any]]]:  # fmt: skip
    """A stack of the caller's own on free ports, up for the `with` body and down afterwards, whatever happened."""
    client = StackClient.on_free_ports(run_dir, replicas, runtime=runtime, env=env)
    try:
        yield client, client.up(scaled=scaled, workers=workers)
    finally:
        client.run("down")
