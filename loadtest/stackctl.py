"""The few things run.py asks of the running stack: where it is, chaos commands, stub counters, cache clear.

Chaos goes through the runtime's own commands (`deploy/stack.py redis-kill`, which is `docker compose
kill redis` or a SIGKILL to the local redis-server), so the load test breaks the stack the way an
operator would.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ADMIN_KEY = "demo-admin"


@dataclass
class ActionRecord:
    """One chaos command: when it was due and ran (epoch seconds), how it ended, and its last output."""

    name: str
    due_at: float
    started_at: float
    finished_at: float
    returncode: int
    output: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Stack:
    """`deploy/stack.py` with the runtime and any extra options (run dir, ports) the caller chose."""

    def __init__(self, runtime: str, extra_args: str = "") -> None:
        self.prefix = [
            sys.executable,
            str(REPO / "deploy" / "stack.py"),
            "--runtime",
            runtime,
            *shlex.split(extra_args),
        ]

    def command(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
        )

    def info(self) -> dict[str, Any] | None:
        """The running stack's URLs (`stack.py info --json`), or None when it cannot say."""
        try:
            done = self.command("info", "--json", timeout=30)
            if done.returncode != 0:
                return None
            info = json.loads(done.stdout)
            return info if isinstance(info, dict) else None
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return None

    def act(self, name: str, due_at: float) -> ActionRecord:
        """Run one chaos command (`redis-kill`, `redis-start`, `replica-kill`) now and record it."""
        started = time.time()
        try:
            done = self.command(*name.split(), timeout=60)
            rc, out = done.returncode, (done.stdout + done.stderr)
        except (OSError, subprocess.TimeoutExpired) as exc:
            rc, out = -1, repr(exc)
        return ActionRecord(name, due_at, started, time.time(), rc, out.strip()[-400:])


def http_json(
    method: str, url: str, *, headers: dict[str, str] | None = None, payload: Any = None, timeout: float = 5.0
) -> Any:
    """A small JSON request with the standard library (run.py must not depend on the load tool's client)."""
    data = json.dumps(payload).encode() if payload is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def wait_healthy(base_url: str, timeout: float) -> bool:
    """True once `GET /cache/health` answers 200 within `timeout` seconds (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http_json("GET", f"{base_url}/cache/health", timeout=2)
            return True
        except (OSError, urllib.error.URLError, ValueError):
            time.sleep(0.2)
    return False


def clear_caches(base_urls: list[str]) -> list[str]:
    """`POST /cache/clear` with the admin key on every URL given; returns the errors (empty when all went well)."""
    errors = []
    for url in base_urls:
        try:
            # The admin names its scope explicitly: every school (an admin clear without one is a 400).
            auth = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
            http_json("POST", f"{url}/cache/clear", headers=auth, payload={"all": True})
        except (OSError, urllib.error.URLError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
    return errors


def stub_stats(stub_url: str, *, reset: bool = False) -> dict[str, int]:
    """The stub's call counters (`GET /stats`), zeroed first when `reset`."""
    if reset:
        http_json("POST", f"{stub_url}/stats/reset")
    stats = http_json("GET", f"{stub_url}/stats")
    return {k: int(v) for k, v in stats.items()}
