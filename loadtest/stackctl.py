"""The few things run.py asks of the running stack: where it is, chaos commands, stub counters, cache clear.

Chaos goes through the runtime's own commands (`python -m deploy.stack redis-kill`, which is `docker compose
kill redis` or a SIGKILL to the local redis-server), so the load test breaks the stack the way an
operator would.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from deploy.client import StackClient
from deploy.errors import NotReady, StackError
from deploy.readiness import http_get, wait_for
from deploy.topology import ROOT as REPO
from loadtest.keyspace import DEMO_ADMIN_KEY, DEMO_TENANT_KEYS, KEYS_VARIABLE

__all__ = ["REPO", "ActionRecord", "Stack", "clear_caches", "locust_env", "stack_keys", "stub_stats"]


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
    """The stack's CLI (deploy.client.StackClient) with the runtime and the options (run dir, ports) given."""

    def __init__(self, runtime: str, extra_args: str = "") -> None:
        self.client = StackClient(runtime, shlex.split(extra_args))

    def info(self) -> dict[str, Any] | None:
        """The running stack's URLs and keys (`info --json`), or None when it cannot say."""
        try:
            return self.client.info()
        except (StackError, OSError, subprocess.TimeoutExpired, ValueError):
            return None

    def act(self, name: str, due_at: float) -> ActionRecord:
        """Run one chaos command (`redis-kill`, `redis-start`, `replica-kill`) now and record it."""
        started = time.time()
        try:
            done = self.client.run(*name.split(), timeout=60)
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
    try:
        wait_for(lambda: http_get(f"{base_url}/cache/health")[0] == 200, timeout=timeout, interval=0.2)
    except NotReady:
        return False
    return True


def stack_keys(info: dict[str, Any]) -> tuple[dict[str, int], str | None]:
    """The tenant keys (key -> school) and the admin key the running stack's API accepts (from `info`),
    else the demo keys: a `.env` with real keys then works as well as the defaults."""
    keys = info.get("keys") or {}
    tenants = {str(k): int(v) for k, v in (keys.get("tenants") or DEMO_TENANT_KEYS).items()}
    return tenants, keys.get("admin") if keys else DEMO_ADMIN_KEY


def locust_env(tenants: dict[str, int]) -> dict[str, str]:
    """What the Locust processes need in their environment: the tenant keys (loadtest/keyspace.py reads them)
    and the repository on PYTHONPATH (Locust imports the locustfile by its path, not as `loadtest.*`)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {KEYS_VARIABLE: ",".join(f"{key}:{school}" for key, school in tenants.items()), "PYTHONPATH": path}


def clear_caches(base_urls: list[str], admin_key: str | None = DEMO_ADMIN_KEY) -> list[str]:
    """`POST /cache/clear` with the admin key on every URL given; returns the errors (empty when all went well)."""
    errors = []
    for url in base_urls:
        try:
            # The admin names its scope explicitly: every school (an admin clear without one is a 400).
            auth = {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"}
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
