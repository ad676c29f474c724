"""Runs the chaos plan against the stack: stack commands, the model's failure modes, and the stub's counters.

The model fails through the upstream stub's `POST /control` (`fail_status`, `latency_ms`); the stub's call
counters are read at each phase start, so each phase's upstream calls are known.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from loadtest.plan import phase_start
from loadtest.stackctl import ActionRecord, Stack, stub_stats


def control(stub_url: str, **knobs: float) -> dict[str, Any]:
    """The stub's `POST /control` with `knobs` (none: just read the current ones); returns its knobs."""
    req = urllib.request.Request(
        f"{stub_url}/control",
        method="POST",
        data=json.dumps(knobs).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


class Model:
    """The upstream stub's failure knobs; `heal()` restores the latency it had when the run began."""

    def __init__(self, stub_url: str, upstream_timeout_s: float) -> None:
        self.url = stub_url
        self.base_latency_ms = float(self.control()["latency_ms"])
        # Beyond the API's UPSTREAM_TIMEOUT, so every miss times out; short, so the phase stays short.
        self.slow_latency_ms = 1000 * upstream_timeout_s + 1500
        self.settings = {
            "model-down": {"fail_status": 503, "latency_ms": self.base_latency_ms},
            "model-slow": {"fail_status": 0, "latency_ms": self.slow_latency_ms},
            "model-429": {"fail_status": 429, "latency_ms": self.base_latency_ms},
            "model-heal": {"fail_status": 0, "latency_ms": self.base_latency_ms},
        }

    def control(self, **knobs: float) -> dict[str, Any]:
        """`POST /control` with `knobs` (none: just read the current ones)."""
        return control(self.url, **knobs)

    def act(self, name: str, due_at: float) -> ActionRecord:
        started = time.time()
        try:
            rc, out = 0, json.dumps(self.control(**self.settings[name]))
        except (OSError, urllib.error.URLError, ValueError) as exc:
            rc, out = -1, repr(exc)
        return ActionRecord(name, due_at, started, time.time(), rc, out)

    def heal(self) -> None:
        self.act("model-heal", time.time())


def counters(stub_url: str) -> dict[str, int]:
    """The stub's counters, or {} when it does not answer (the phase's calls are then not measured)."""
    try:
        return stub_stats(stub_url)
    except (OSError, urllib.error.URLError, ValueError):
        return {}


def drive(
    stack: Stack,
    stub_url: str,
    model: Model | None,
    plan: list[tuple[str, str, float]],
    t0: float,
    duration: float,
    records: list[ActionRecord],
    snapshots: list[tuple[str, dict[str, int]]],
    stop: threading.Event,
) -> None:
    """At each phase's fixed offset from the load's start: read the stub's counters, then run its command."""
    for action, phase, frac in plan:
        due = phase_start(t0, frac, duration)
        if stop.wait(max(0.0, due - time.time())):
            return
        snapshots.append((phase, counters(stub_url)))
        if not action:
            continue
        if action.startswith("model-") and model is None:
            continue
        rec = model.act(action, due) if model and action.startswith("model-") else stack.act(action, due)
        records.append(rec)
        stamp = time.strftime("%H:%M:%S", time.localtime(rec.started_at))
        print(
            f"[{stamp}] t+{rec.started_at - t0:5.1f}s {action}: rc={rec.returncode} "
            f"({rec.finished_at - rec.started_at:.2f}s)",
            flush=True,
        )
