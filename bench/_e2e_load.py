"""wrk as the load generator: one run's throughput, latency percentiles and errors, plus the CPU time every
component (wrk itself, nginx, the API workers, Redis) spent during it, read from /proc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import BenchError

_TICK = os.sysconf("SC_CLK_TCK")

# wrk calls `done` once at the end: print its figures as one JSON line the bench parses.
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def lua_script(method: str, headers: dict[str, str], bodies: Sequence[str] = ()) -> str:
    """A wrk script: one fixed request (wrk's fast path), or several bodies sent in turn."""
    lines = [f"wrk.method = {_lua_string(method)}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    if len(bodies) == 1:
        lines.append(f"wrk.body = {_lua_string(bodies[0])}")
    elif bodies:
        lines.append("local bodies = {" + ", ".join(_lua_string(b) for b in bodies) + "}")
        lines.append("local i = 0")
        lines.append("request = function()")
        lines.append("  i = i % #bodies + 1")
        lines.append("  return wrk.format(nil, nil, nil, bodies[i])")
        lines.append("end")
    return "\n".join(lines) + "\n" + _DONE


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / _TICK


@dataclass
class WrkResult:
    """One wrk run: throughput, latency (milliseconds), errors, and CPU seconds per component."""

    label: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "requests": self.requests,
            "errors": self.errors,
        }
        # CPU share of one core each component used; the machine has os.cpu_count() of them.
        out["cpu_cores"] = {k: round(v / self.seconds, 3) for k, v in self.cpu.items()}
        if self.requests:
            out["cpu_us_per_request"] = {k: round(1e6 * v / self.requests, 1) for k, v in self.cpu.items()}
        return out


def wrk_binary() -> str:
    found = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
    if found is None:
        raise BenchError("wrk is not installed: run `make system-deps` (Debian: apt-get install wrk)")
    return found


def run_wrk(
    label: str,
    url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    pids: dict[str, list[int]] | None = None,
) -> WrkResult:
    """Run wrk against `url` for `seconds`; count each component's CPU time in `pids` over the same span."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        groups = pids or {}
        before = {name: sum(cpu_seconds(p) for p in ps) for name, ps in groups.items()}
        args = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", fh.name, url]
        started = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # wait4 gives the finished child's own CPU time (rusage), which /proc can no longer show.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        after = {name: sum(cpu_seconds(p) for p in ps) for name, ps in groups.items()}
        assert proc.stdout is not None
        output = proc.stdout.read()
        proc.stdout.close()
    finally:
        os.unlink(fh.name)
    line = next((ln for ln in output.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{output}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    duration = data["duration_us"] / 1e6
    cpu = {name: after[name] - before[name] for name in groups}
    cpu["wrk"] = usage.ru_utime + usage.ru_stime
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        label=label,
        rps=data["requests"] / duration,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        requests=data["requests"],
        errors=errors,
        seconds=elapsed,
        cpu=cpu,
    )
