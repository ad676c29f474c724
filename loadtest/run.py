"""`python -m loadtest.run sharing|chaos`: headless Locust against the running scaled stack, then reports and a verdict.

sharing: tenants hammer a Zipf-skewed key mix through nginx; passes when nothing fails, some hits were
served by another instance than the one that computed the value, and the upstream stub was called
exactly once per unique key (a streamed chat question: one upstream stream, its time to first content chunk
and total time reported). chaos: the same load while the model fails (down, slow, rate-limiting), then
Redis is killed and restarted and a replica is killed, at fixed offsets (loadtest/plan.py); passes when
nothing fails (warm keys answer whatever the model does, cold misses get the mapped status in time), model
calls stay at most one per request, p95 stays bounded and the hit ratio comes back. Thresholds:
loadtest/analysis.py. Writes reports/<scenario>_*.csv, <scenario>.html, <scenario>_timeline.png and
<scenario>_verdict.json.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest.analysis import (
    Thresholds,
    chaos_checks,
    model_windows,
    notes,
    phase_figures,
    sharing_checks,
    summary_line,
    upstream_calls_by_phase,
    warm_baseline,
)
from loadtest.chaos import Model, control, counters, drive
from loadtest.plan import DEFAULT_DURATION, Phase, chaos_phases, chaos_plan, widen
from loadtest.plot import plot_timeline
from loadtest.report import print_verdict
from loadtest.stackctl import (
    REPO,
    ActionRecord,
    Stack,
    clear_caches,
    locust_env,
    stack_keys,
    stub_stats,
    wait_healthy,
)

DEFAULTS = {"sharing": {"users": 20, "duration": 60.0}, "chaos": {"users": 20, "duration": DEFAULT_DURATION}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=sorted(DEFAULTS))
    p.add_argument("--users", type=int, help="concurrent Locust users (default 20)")
    p.add_argument("--duration", type=float, help="seconds of load (default 60 sharing, 120 chaos)")
    p.add_argument("--user-rps", type=float, default=4.0, help="requests/s per user (default 4)")
    p.add_argument("--host", help="base URL of nginx (default: from `stack.py info`, else :8080)")
    p.add_argument("--stub-url", help="base URL of the upstream stub (default: from `stack.py info`, else :8090)")
    p.add_argument("--runtime", default="auto", help="stack runtime for info and chaos commands")
    p.add_argument("--stack-args", default="", help="extra options for `python -m deploy.stack` (run dir, ports)")
    p.add_argument("--reports", type=Path, default=REPO / "reports", help="output folder")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument(
        "--stream-chunk-delay-ms",
        type=float,
        default=20.0,
        help="the stub's delay between streamed chunks during the run, restored after (default 20; -1: leave it)",
    )
    p.add_argument("--no-replica-kill", action="store_true", help="chaos: skip the replica kill")
    p.add_argument("--no-model-phases", action="store_true", help="chaos: skip the model failure phases")
    p.add_argument(
        "--upstream-timeout",
        type=float,
        default=float(os.environ.get("UPSTREAM_TIMEOUT", "2")),
        help="the stack's UPSTREAM_TIMEOUT in s (default: $UPSTREAM_TIMEOUT, else 2); model-slow exceeds it",
    )
    th = Thresholds()
    p.add_argument("--deadline-s", type=float, default=th.deadline_s, help="an answer after this fails")
    p.add_argument("--p95-factor", type=float, default=th.p95_factor)
    p.add_argument("--p95-slack-ms", type=float, default=th.p95_slack_ms)
    p.add_argument("--recovery-s", type=float, default=th.recovery_s)
    p.add_argument("--hit-tolerance", type=float, default=th.hit_tolerance)
    args = p.parse_args(argv)
    args.users = args.users or DEFAULTS[args.scenario]["users"]
    args.duration = args.duration or DEFAULTS[args.scenario]["duration"]
    return args


def locust_command(args: argparse.Namespace, prefix: Path, timeline: Path, started: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(REPO / "loadtest" / "locustfile.py"),
        "--headless",
        "--host",
        args.host,
        "-u",
        str(args.users),
        "-r",
        str(max(1, args.users)),
        "-t",
        f"{round(args.duration)}s",
        "--stop-timeout",
        "10",
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--html",
        f"{prefix}.html",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--timeline-out",
        str(timeline),
        "--started-file",
        str(started),
        "--user-rps",
        str(args.user_rps),
        "--deadline-s",
        str(args.deadline_s),
        "--seed",
        str(args.seed),
    ]


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> float | None:
    """The start time Locust wrote to `path`, or None if Locust died or did not start in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().strip():
            return float(path.read_text())
        time.sleep(0.05)
    return None


def is_loopback(url: str) -> bool:
    """Load goes only to this machine: 127.0.0.0/8, ::1 or localhost."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def discover(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    info = stack.info() if not (args.host and args.stub_url) else None
    if not (args.host and args.stub_url) and info is None:
        print("note: `stack.py info` did not answer; using http://127.0.0.1:8080 and :8090", flush=True)
    info = info or {}
    args.host = (args.host or info.get("nginx_url") or "http://127.0.0.1:8080").rstrip("/")
    args.stub_url = (args.stub_url or info.get("stub_url") or "http://127.0.0.1:8090").rstrip("/")
    return info


def stream_pace(args: argparse.Namespace) -> float | None:
    """Set the stub's delay between streamed chunks for the run (a model streams its answer over time, so time
    to first chunk and total time differ); returns the delay to restore, None when it was left alone."""
    if args.stream_chunk_delay_ms < 0:
        return None
    try:
        before = float(control(args.stub_url)["chunk_delay_ms"])
        control(args.stub_url, chunk_delay_ms=args.stream_chunk_delay_ms)
    except (OSError, KeyError, ValueError) as exc:
        print(f"note: the stub's chunk delay was left as it is ({exc})", flush=True)
        return None
    return before


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    th = Thresholds(args.p95_factor, args.p95_slack_ms, args.recovery_s, args.hit_tolerance, args.deadline_s)
    stack = Stack(args.runtime, args.stack_args)
    info = discover(args, stack)
    if not (is_loopback(args.host) and is_loopback(args.stub_url)):
        print(f"error: load goes only to this machine (127.0.0.1); refusing {args.host} / {args.stub_url}")
        return 2
    if not wait_healthy(args.host, timeout=15):
        print(f"error: {args.host}/cache/health does not answer; is the scaled stack up (make up-scaled)?")
        return 2
    tenants, admin_key = stack_keys(info)  # the running stack's keys: a .env with real keys works too
    os.environ.update(locust_env(tenants))
    errors = clear_caches([args.host, *info.get("replica_urls", [])], admin_key)
    if errors:
        print("warning: cache clear failed on", "; ".join(errors), flush=True)
    stub_stats(args.stub_url, reset=True)

    args.reports.mkdir(parents=True, exist_ok=True)
    prefix = args.reports / args.scenario
    timeline_path, started_path = Path(f"{prefix}_timeline.json"), Path(f"{prefix}.started")
    for stale in (timeline_path, started_path):
        stale.unlink(missing_ok=True)
    print(
        f"{args.scenario}: {args.users} users x {args.user_rps:g} req/s for {args.duration:g} s "
        f"against {args.host} (stub {args.stub_url})",
        flush=True,
    )
    plan = chaos_plan(args.no_replica_kill, args.no_model_phases)
    model = None
    if args.scenario == "chaos" and not args.no_model_phases:
        try:
            model = Model(args.stub_url, args.upstream_timeout)
        except (OSError, ValueError) as exc:
            print(f"error: the stub's POST /control does not answer ({exc}); run with --no-model-phases")
            return 2
    chunk_delay = stream_pace(args)
    proc = subprocess.Popen(locust_command(args, prefix, timeline_path, started_path), cwd=REPO)
    records: list[ActionRecord] = []
    snapshots: list[tuple[str, dict[str, int]]] = []
    stop = threading.Event()
    driver = None
    try:
        t0 = wait_for_file(started_path, proc, timeout=60)
        if t0 is None:
            print("error: Locust did not start")
            return 2
        if args.scenario == "chaos":
            driver = threading.Thread(
                target=drive,
                daemon=True,
                args=(stack, args.stub_url, model, plan, t0, args.duration, records, snapshots, stop),
            )
            driver.start()
        proc.wait(timeout=args.duration + 90)
    finally:
        stop.set()
        if driver is not None:
            driver.join(timeout=70)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if model is not None:
            model.heal()  # never leave the model failing
        if chunk_delay is not None:
            control(args.stub_url, chunk_delay_ms=chunk_delay)
        if any(r.name == "redis-kill" for r in records) and not any(r.name == "redis-start" for r in records):
            stack.act("redis-start", time.time())  # never leave the stack without Redis
        started_path.unlink(missing_ok=True)
    return report(args, th, t0, timeline_path, records, snapshots)


def chaos_verdict(
    args: argparse.Namespace,
    th: Thresholds,
    t0: float,
    timeline: dict[str, Any],
    records: list[ActionRecord],
    snapshots: list[tuple[str, dict[str, int]]],
    stub: dict[str, int],
) -> tuple[list[Phase], list[dict[str, Any]], list[dict[str, Any]]]:
    """Phases, their figures and the checks of a chaos run (the commands' exit codes among them)."""
    end = float(timeline["stopped_at"] or time.time())
    phases = widen(chaos_phases(t0, end, args.duration, args.no_replica_kill, args.no_model_phases), timeline)
    calls = upstream_calls_by_phase(snapshots, stub) if stub else {}
    windows = model_windows(phases)
    kills = [(r.started_at, r.finished_at) for r in records if r.name == "replica-kill"]
    figures = [phase_figures(timeline, ph, calls.get(ph.name), windows, kills) for ph in phases]
    # Recovery is timed from when Redis was seen answering again: the end of a successful redis-start.
    redis_back = next((r.finished_at for r in records if r.name == "redis-start" and r.returncode == 0), None)
    checks = chaos_checks(timeline, phases, figures, redis_back, args.users * args.user_rps, th)
    for r in records:
        rec = {"check": f"command {r.name}", "value": f"rc={r.returncode}", "threshold": "rc=0"}
        checks.append(rec | {"passed": r.returncode == 0, "result": "PASS" if r.returncode == 0 else "FAIL"})
    return phases, figures, checks


def report(
    args: argparse.Namespace,
    th: Thresholds,
    t0: float,
    timeline_path: Path,
    records: list[ActionRecord],
    snapshots: list[tuple[str, dict[str, int]]],
) -> int:
    if not timeline_path.exists():
        print(f"error: Locust wrote no timeline ({timeline_path})")
        return 2
    timeline = json.loads(timeline_path.read_text())
    stub = counters(args.stub_url)
    p95_bound = warm_level = None
    if args.scenario == "chaos":
        phases, figures, checks = chaos_verdict(args, th, t0, timeline, records, snapshots, stub)
        warm_p95, warm_level = warm_baseline(timeline, phases[0])
        if warm_p95 is not None:
            p95_bound = th.p95_factor * warm_p95 + th.p95_slack_ms
    else:
        end = float(timeline["stopped_at"] or time.time())
        phases = widen([Phase("run", t0, end)], timeline)
        figures = [phase_figures(timeline, phases[0])]
        checks = sharing_checks(figures[0], timeline, stub, args.users * args.user_rps, th)
    passed = all(c["passed"] for c in checks)
    result = ("PASS" if passed else "FAIL") + (" (WARN)" if any(c["result"] == "WARN" for c in checks) else "")
    completed = timeline.get("completed_keys", timeline["unique_keys"])
    png = args.reports / f"{args.scenario}_timeline.png"
    plot_timeline(
        timeline,
        phases,
        png,
        p95_bound_ms=p95_bound,
        warm_hit_level=warm_level,
        subtitle=summary_line(figures, completed, stub),
        title=f"{args.scenario}: {args.users} users, {args.duration:g} s, {args.host} - {result}",
    )
    verdict = {
        "scenario": args.scenario,
        "passed": passed,
        "result": result,
        "host": args.host,
        "users": args.users,
        "duration_s": args.duration,
        "user_rps": args.user_rps,
        "stream_chunk_delay_ms": args.stream_chunk_delay_ms,
        "upstream_timeout_s": args.upstream_timeout,
        "started_at": t0,
        "thresholds": th.describe(args.scenario),
        "checks": checks,
        "notes": notes(timeline, phases, figures, args.upstream_timeout),
        "phases": figures,
        "stub": stub,
        "unique_keys": timeline["unique_keys"],
        "completed_keys": completed,
        "totals": timeline["totals"],
        "actions": [r.to_json() for r in records],
        "png": str(png),
    }
    verdict_path = args.reports / f"{args.scenario}_verdict.json"
    verdict_path.write_text(json.dumps(verdict, indent=2))
    print_verdict(verdict)
    print(f"reports: {args.reports}/{args.scenario}_*.csv, {args.scenario}.html, {png.name}, {verdict_path.name}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
