"""What the benchmarks share: a throwaway redis-server, timing helpers, and the report file."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from deploy.ports import free_port
from deploy.readiness import wait_for

REPORTS = Path(__file__).resolve().parent.parent / "reports"


class BenchError(Exception):
    """A benchmark cannot run here (a tool is missing); bench.run's main turns it into exit status 2."""


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of its own on a free 127.0.0.1 port, like the one the stack runs (AOF on)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            with redis.Redis(port=port) as client:
                wait_for(client.ping, timeout=10, interval=0.01, what=f"redis-server on port {port} answers PING")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def summary(samples_s: list[float]) -> dict[str, float]:
    """Median, p90 and p99 of per-operation times, in microseconds."""
    ordered = sorted(samples_s)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

    return {"median_us": round(statistics.median(ordered) * 1e6, 3), "p90_us": round(pick(0.9), 3),
            "p99_us": round(pick(0.99), 3), "n": len(ordered)}  # fmt: skip


def write_report(name: str, figures: dict[str, Any]) -> Path:
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"bench-{name}.json"
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    body = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        **figures,
    }
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def verdict(label: str, value: float, target: float, unit: str, *, lower_is_better: bool = True) -> bool:
    ok = value <= target if lower_is_better else value >= target
    sign = "<=" if lower_is_better else ">="
    print(f"  {'PASS' if ok else 'FAIL'}  {label}: {value:.3f} {unit} (target {sign} {target} {unit})")
    return ok
