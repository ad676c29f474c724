"""From the per-second timeline to phase figures and pass/fail checks (pure functions, no I/O).

Thresholds (stated in every verdict):
- every phase: zero failed requests;
- chaos: p95 of every phase <= p95_factor x warm p95 + p95_slack_ms, where "warm p95" is measured over
  the second half of the warm phase (steady state, after the cold misses of the first seconds);
- chaos: after `redis-start`, the hit ratio over a rolling 3 s window is back to the warm level (the warm
  phase's last 5 s) minus hit_tolerance within recovery_s seconds;
- sharing: cross-instance hits > 0 and upstream calls / unique keys = 1.00 for embeddings and chat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loadtest.recorder import percentile


@dataclass(frozen=True)
class Thresholds:
    p95_factor: float = 2.0
    p95_slack_ms: float = 100.0
    recovery_s: float = 10.0
    hit_tolerance: float = 0.05

    def describe(self, scenario: str) -> list[str]:
        if scenario == "sharing":
            return [
                "zero failed requests",
                "cross-instance hits > 0",
                "upstream calls / unique keys = 1.00 exactly (embedding inputs and chat requests)",
            ]
        return [
            "zero failed requests in every phase (a request counts in the phase it was sent in)",
            f"p95 of every phase <= {self.p95_factor:g} x warm p95 + {self.p95_slack_ms:g} ms "
            "(warm p95: second half of the warm phase)",
            f"hit ratio (rolling 3 s) back to warm level - {self.hit_tolerance:g} "
            f"within {self.recovery_s:g} s of redis-start (warm level: last 5 s of the warm phase)",
        ]


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # epoch seconds
    end: float


def seconds_in(timeline: dict[str, Any], start: float, end: float) -> list[dict[str, Any]]:
    """The timeline's one-second buckets whose midpoint lies in [start, end)."""
    return [s for s in timeline["seconds"] if start <= s["t"] + 0.5 < end]


def hit_ratio(seconds: list[dict[str, Any]]) -> float | None:
    """HIT / (HIT + MISS + PARTIAL) over the buckets, None when nothing cacheable was answered."""
    hits = sum(s["cache"].get("HIT", 0) for s in seconds)
    total = hits + sum(s["cache"].get("MISS", 0) + s["cache"].get("PARTIAL", 0) for s in seconds)
    return hits / total if total else None


def phase_figures(timeline: dict[str, Any], phase: Phase) -> dict[str, Any]:
    secs = seconds_in(timeline, phase.start, phase.end)
    latencies = [x for s in secs for x in s["latencies_ms"]]
    requests = sum(s["requests"] for s in secs)
    tiers: dict[str, int] = {}
    for s in secs:
        for tier, n in s["tiers"].items():
            tiers[tier] = tiers.get(tier, 0) + n
    served = sum(tiers.values())
    return {
        "phase": phase.name,
        "from_s": round(phase.start - timeline["started_at"], 1),
        "to_s": round(phase.end - timeline["started_at"], 1),
        "requests": requests,
        "rps": round(requests / max(1e-9, phase.end - phase.start), 1),
        "failures": sum(s["failures"] for s in secs),
        "p95_ms": percentile(latencies, 95),
        "max_ms": max(latencies, default=None),
        "hit_ratio": hit_ratio(secs),
        "cross_instance_hits": sum(s["cross_instance_hits"] for s in secs),
        "redis_tier_share": (tiers.get("redis", 0) / served) if served else None,
    }


def warm_baseline(timeline: dict[str, Any], warm: Phase) -> tuple[float | None, float | None]:
    """(p95 over the warm phase's second half, hit ratio over its last 5 s)."""
    half = seconds_in(timeline, (warm.start + warm.end) / 2, warm.end)
    p95 = percentile([x for s in half for x in s["latencies_ms"]], 95)
    level = hit_ratio(seconds_in(timeline, max(warm.start, warm.end - 5), warm.end))
    return p95, level


def recovery_seconds(timeline: dict[str, Any], redis_start: float, end: float, target: float) -> float | None:
    """Seconds from `redis_start` until the rolling 3 s hit ratio reaches `target`; None if it never does."""
    secs = seconds_in(timeline, redis_start, end)
    for i, sec in enumerate(secs):
        ratio = hit_ratio(secs[max(0, i - 2) : i + 1])
        if ratio is not None and ratio >= target:
            return max(0.0, float(sec["t"]) + 1 - redis_start)
    return None


def check(name: str, value: Any, threshold: str, passed: bool) -> dict[str, Any]:
    return {"check": name, "value": value, "threshold": threshold, "passed": bool(passed)}


def sharing_checks(figures: dict[str, Any], unique: dict[str, int], stub: dict[str, int]) -> list[dict[str, Any]]:
    """Zero failures, cross-instance hits, and exactly one upstream call per unique key."""
    out = [
        check("failed requests", figures["failures"], "== 0", figures["failures"] == 0),
        check("cross-instance hits", figures["cross_instance_hits"], "> 0", figures["cross_instance_hits"] > 0),
    ]
    for label, calls, keys in (
        ("embedding inputs / unique embedding keys", stub.get("embedding_inputs", -1), unique.get("embedding", 0)),
        ("chat requests / unique chat keys", stub.get("chat_requests", -1), unique.get("chat", 0)),
    ):
        ratio = calls / keys if keys else None
        value = f"{calls}/{keys} = {ratio:.2f}" if ratio is not None else f"{calls}/0"
        out.append(check(label, value, "= 1.00 (exactly)", keys > 0 and calls == keys))
    return out


def chaos_checks(
    timeline: dict[str, Any],
    phases: list[Phase],
    figures: list[dict[str, Any]],
    redis_start: float | None,
    th: Thresholds,
) -> list[dict[str, Any]]:
    """Zero failures per phase, p95 per phase within the warm bound, hit ratio recovered in time."""
    warm_p95, warm_level = warm_baseline(timeline, phases[0])
    bound = th.p95_factor * warm_p95 + th.p95_slack_ms if warm_p95 is not None else None
    out = []
    for fig in figures:
        out.append(check(f"failed requests [{fig['phase']}]", fig["failures"], "== 0", fig["failures"] == 0))
    for fig in figures[1:]:
        p95 = fig["p95_ms"]
        ok = bound is not None and p95 is not None and p95 <= bound
        shown = "n/a" if p95 is None else f"{p95:.0f} ms"
        limit = "n/a" if bound is None else f"<= {bound:.0f} ms"
        out.append(check(f"p95 [{fig['phase']}]", shown, limit, ok))
    if redis_start is None or warm_level is None:
        out.append(check("hit ratio recovery after redis-start", "n/a", f"<= {th.recovery_s:g} s", False))
    else:
        target = warm_level - th.hit_tolerance
        rec = recovery_seconds(timeline, redis_start, phases[-1].end, target)
        shown = "never" if rec is None else f"{rec:.0f} s (to {target:.2f})"
        out.append(
            check(
                "hit ratio recovery after redis-start",
                shown,
                f"<= {th.recovery_s:g} s",
                rec is not None and rec <= th.recovery_s,
            )
        )
    return out


# Chaos schedule as fractions of the run (75 s: kill Redis at 20 s, start it at 35 s, kill a replica at
# 50 s, call it recovered at 60 s); fractions keep the short pytest version the same shape.
CHAOS_PLAN = (
    ("redis-kill", "redis-down", 0.267),
    ("redis-start", "redis-back", 0.467),
    ("replica-kill", "replica-down", 0.667),
    ("", "recovered", 0.8),
)


def phase_start(t0: float, fraction: float, duration: float) -> float:
    """When a chaos phase starts: its fixed offset, rounded up to a whole second so that the timeline's
    one-second buckets never straddle a phase boundary (a request sent before the kill stays before it)."""
    return float(math.ceil(t0 + fraction * duration))


def chaos_phases(t0: float, end: float, duration: float, skip_replica: bool) -> list[Phase]:
    """Phases from fixed offsets, so a late command shows as a late effect inside its phase."""
    marks = [("warm", t0)] + [
        (ph, phase_start(t0, f, duration)) for a, ph, f in CHAOS_PLAN if not (skip_replica and a == "replica-kill")
    ]
    return [Phase(name, start, marks[i + 1][1] if i + 1 < len(marks) else end) for i, (name, start) in enumerate(marks)]


def summary_line(figures: list[dict[str, Any]], unique: dict[str, int], stub: dict[str, int]) -> str:
    """Failures, cross-instance hits and upstream calls per unique key, for the plot's title."""
    keys = unique.get("embedding", 0) + unique.get("chat", 0)
    calls = stub.get("embedding_inputs", 0) + stub.get("chat_requests", 0)
    ratio = f"{calls / keys:.2f}" if keys else "n/a"
    return (
        f"failed requests {sum(f['failures'] for f in figures)}, cross-instance hits "
        f"{sum(f['cross_instance_hits'] for f in figures)}, upstream calls / unique keys {calls}/{keys} = {ratio}"
    )


def widen(phases: list[Phase], timeline: dict[str, Any]) -> list[Phase]:
    """Stretch the first and last phase over the whole timeline (its buckets are whole seconds)."""
    secs = timeline["seconds"]
    if not secs:
        return phases
    first, last = phases[0], phases[-1]
    phases[0] = Phase(first.name, min(first.start, secs[0]["t"]), first.end)
    phases[-1] = Phase(last.name, phases[-1].start, max(last.end, secs[-1]["t"] + 1.0))
    return phases
