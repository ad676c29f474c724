"""From the per-second timeline to phase figures and checks (pure functions, no I/O).

Thresholds (stated in every verdict):
- every phase: zero failed requests. In the model phases a cold request (one of its keys never answered 200
  before) may get the API's mapped model error (429 with Retry-After, 502, 504), counted apart; outside
  them a mapped error is a failure. Any non-200 for a warm request, a connection error, an error nginx
  made, another status or an answer after the deadline is a failure everywhere;
- model phases: upstream calls / client requests <= 1 (no retry multiplies a failing call);
- chaos: p95 of every phase <= p95_factor x warm p95 + p95_slack_ms, where "warm p95" is measured over
  the second half of the warm phase (steady state, after the cold misses of the first seconds); in the model
  phases over the warm requests only (a cold miss waits for the model's failure, bounded by the deadline);
- chaos: after Redis answers again (the end of `redis-start`), the hit ratio over a rolling 3 s window is back
  to the warm level (the warm phase's last 5 s) minus hit_tolerance within recovery_s seconds;
- sharing: cross-instance hits > 0 and upstream calls / unique keys = 1.00 for embeddings, chat and streamed
  chat (the stub's `chat_streams`), over the keys whose requests completed (a key whose only request was cut
  off by the end of the run may cost 0 or 1);
- streamed chat: a stream is ok when it ends with `data: [DONE]` after content (loadtest/outcome.py); an
  error event is a mapped model error for a cold key in a model phase and a failure anywhere else, and a
  stream cut off mid-way is a failure, in the phase it was sent in like any request, with one exception: a
  stream in flight when a replica was SIGKILLed that broke off during the kill (from the command's start to
  KILL_CUT_SLACK_S after its end) is counted apart and reported (WARN), not failed. nginx retries a plain
  request in flight on a dying replica, which is why those must not fail; no proxy can retry an answer it has
  begun to send, so that cut is the client's to retry. An error event is never excused this way. Chaos: zero
  failed streams in the Redis phases (a phase without any stream is n/a); time to first content chunk p50/p95
  is reported per phase, not bounded.

A check the run could not measure (no cold key in a model phase, no stub figures, the run ended before the
recovery window closed) is reported as n/a with what was missing, never as a failure; a warm phase that
did not reach min_rate_share of its target rate is reported as such (WARN), since its figures are for less
load than asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadtest.plan import MODEL_PHASES, REDIS_PHASES, Phase
from loadtest.recorder import percentile

# How long after the replica-kill command returns a stream may still break off because of it (the client sees
# the closed connection at once; the slack covers the command returning before the process is gone).
KILL_CUT_SLACK_S = 1.0


@dataclass(frozen=True)
class Thresholds:
    p95_factor: float = 2.0
    p95_slack_ms: float = 100.0
    recovery_s: float = 10.0
    hit_tolerance: float = 0.05
    deadline_s: float = 10.0
    min_rate_share: float = 0.8

    def describe(self, scenario: str) -> list[str]:
        part = "the run" if scenario == "sharing" else "warm phase"
        rate = f"{part} at >= {self.min_rate_share:.0%} of the target rate, else reported (WARN), not failed"
        if scenario == "sharing":
            return [
                "zero failed requests",
                "cross-instance hits > 0",
                "upstream calls / unique keys = 1.00 exactly (embedding inputs, chat requests, chat streams), over "
                "the keys whose requests completed; a key cut off by the end of the run may add 0 or 1 call",
                "a stream is ok when it ends with data: [DONE] after content; an error event or a cut is a failure",
                rate,
            ]
        return [
            "zero failed requests in every phase (a request counts in the phase it was sent in); an answer after "
            f"{self.deadline_s:g} s fails",
            "model phases: any non-200 for a warm key fails; a cold key may get a mapped model error "
            "(429 with Retry-After, 502, 504, from a replica, OpenAI's envelope), counted apart",
            "model phases: upstream calls / client requests <= 1.00",
            "Redis phases: zero failed streams (an error event, a cut, no data: [DONE])",
            "a stream in flight on a killed replica that broke off during the kill: reported (WARN), not failed "
            "(no proxy can retry an answer it has begun); any other cut fails",
            f"p95 of every phase <= {self.p95_factor:g} x warm p95 + {self.p95_slack_ms:g} ms "
            "(warm p95: second half of the warm phase; model phases: warm requests only)",
            f"hit ratio (rolling 3 s) back to warm level - {self.hit_tolerance:g} "
            f"within {self.recovery_s:g} s of Redis answering again (warm level: last 5 s of the warm phase)",
            rate,
        ]


def seconds_in(timeline: dict[str, Any], start: float, end: float) -> list[dict[str, Any]]:
    """The timeline's one-second buckets whose midpoint lies in [start, end)."""
    return [s for s in timeline["seconds"] if start <= s["t"] + 0.5 < end]


def hit_ratio(seconds: list[dict[str, Any]]) -> float | None:
    """HIT / (HIT + MISS + PARTIAL) over the buckets, None when nothing cacheable was answered."""
    hits = sum(s["cache"].get("HIT", 0) for s in seconds)
    total = hits + sum(s["cache"].get("MISS", 0) + s["cache"].get("PARTIAL", 0) for s in seconds)
    return hits / total if total else None


def _sum_counts(secs: list[dict[str, Any]], field: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in secs:
        for name, n in s.get(field, {}).items():
            out[name] = out.get(name, 0) + n
    return out


def model_windows(phases: list[Phase]) -> list[tuple[float, float]]:
    """Where a mapped model error on a cold key is expected: each model phase, and the second before it (a
    request sent then is still waiting for the model when it starts failing)."""
    return [(ph.start - 1.0, ph.end) for ph in phases if ph.name in MODEL_PHASES]


def in_windows(t: float, windows: list[tuple[float, float]]) -> bool:
    """True when the bucket starting at `t` has its midpoint in one of the windows."""
    return any(start <= t + 0.5 < end for start, end in windows)


def phase_figures(
    timeline: dict[str, Any],
    phase: Phase,
    upstream_calls: int | None = None,
    windows: list[tuple[float, float]] | None = None,
    kills: list[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """What one phase saw; `failures` counts mapped errors outside the model windows (default: the phase
    itself when it is a model phase) as failures, and not the streams cut by a replica kill (`kills`: when
    each replica-kill command started and ended)."""
    secs = seconds_in(timeline, phase.start, phase.end)
    requests = sum(s["requests"] for s in secs)
    tiers, mapped = _sum_counts(secs, "tiers"), _sum_counts(secs, "mapped")
    served = sum(tiers.values())
    if windows is None:
        windows = [(phase.start, phase.end)] if phase.name in MODEL_PHASES else []
    unexpected = sum(sum(s.get("mapped", {}).values()) for s in secs if not in_windows(s["t"], windows))
    excused = [cut for s in secs for cut in s.get("stream_cuts", []) if cut_by_kill(cut, kills or [])]
    excused_warm = sum(1 for cut in excused if cut[2])
    hard = sum(s["failures"] for s in secs) - len(excused)
    warm_failures = sum(s.get("warm_failures", 0) for s in secs) - excused_warm
    cold_latencies = [x for s in secs for x in s.get("cold_latencies_ms", [])]
    ttfc = [x for s in secs for x in s.get("ttfc_ms", [])]
    stream_totals = [x for s in secs for x in s.get("stream_total_ms", [])]
    stream_unexpected = sum(s.get("stream_mapped", 0) for s in secs if not in_windows(s["t"], windows))
    return {
        "phase": phase.name,
        "from_s": round(phase.start - timeline["started_at"], 1),
        "to_s": round(phase.end - timeline["started_at"], 1),
        "requests": requests,
        "rps": round(requests / max(1e-9, phase.end - phase.start), 1),
        "failures": hard + unexpected,
        "warm_requests": sum(s.get("warm_requests", 0) for s in secs),
        "warm_failures": warm_failures,
        "cold_requests": len(cold_latencies),
        "cold_failures": hard - warm_failures,
        "mapped": mapped,
        "stale": sum(s["cache"].get("STALE", 0) for s in secs),
        "p95_ms": percentile([x for s in secs for x in s["latencies_ms"]], 95),
        "max_ms": max((x for s in secs for x in s["latencies_ms"]), default=None),
        "warm_p95_ms": percentile([x for s in secs for x in s.get("warm_latencies_ms", [])], 95),
        "cold_max_ms": max(cold_latencies, default=None),
        "hit_ratio": hit_ratio(secs),
        "cross_instance_hits": sum(s["cross_instance_hits"] for s in secs),
        "redis_tier_share": (tiers.get("redis", 0) / served) if served else None,
        "upstream_calls": upstream_calls,
        "stream_requests": sum(s.get("stream_requests", 0) for s in secs),
        "stream_failures": sum(s.get("stream_failures", 0) for s in secs) + stream_unexpected - len(excused),
        "stream_cut_by_kill": len(excused),
        "stream_mapped": sum(s.get("stream_mapped", 0) for s in secs),
        "stream_roles": _sum_counts(secs, "stream_roles"),
        "ttfc_p50_ms": percentile(ttfc, 50),
        "ttfc_p95_ms": percentile(ttfc, 95),
        "stream_total_p50_ms": percentile(stream_totals, 50),
        "stream_total_p95_ms": percentile(stream_totals, 95),
    }


def cut_by_kill(cut: list[float], kills: list[tuple[float, float]]) -> bool:
    """True when a stream cut off ([sent, broke off, warm]) was sent before a kill ended and broke off during it."""
    sent, broke = cut[0], cut[1]
    return any(sent <= end and start <= broke <= end + KILL_CUT_SLACK_S for start, end in kills)


def upstream_calls_by_phase(snapshots: list[tuple[str, dict[str, int]]], end: dict[str, int]) -> dict[str, int]:
    """Model calls (embedding and chat requests, chat streams) per phase, from the stub's counters at each phase start;
    a phase whose counters at either edge are missing (the stub did not answer) is left out."""
    marks = [*snapshots, ("", end)]

    def calls(stats: dict[str, int]) -> int:
        return stats.get("embedding_requests", 0) + stats.get("chat_requests", 0) + stats.get("chat_streams", 0)

    return {
        name: calls(marks[i + 1][1]) - calls(stats)
        for i, (name, stats) in enumerate(snapshots)
        if stats and marks[i + 1][1]
    }


def warm_baseline(timeline: dict[str, Any], warm: Phase) -> tuple[float | None, float | None]:
    """(p95 over the warm phase's second half, hit ratio over its last 5 s, else over the whole phase)."""
    half = seconds_in(timeline, (warm.start + warm.end) / 2, warm.end)
    p95 = percentile([x for s in half for x in s["latencies_ms"]], 95)
    level = hit_ratio(seconds_in(timeline, max(warm.start, warm.end - 5), warm.end))
    if level is None:
        level = hit_ratio(seconds_in(timeline, warm.start, warm.end))
    return p95, level


def recovery_seconds(timeline: dict[str, Any], redis_back: float, end: float, target: float) -> float | None:
    """Seconds from `redis_back` until the rolling 3 s hit ratio reaches `target`; None if it never does."""
    secs = seconds_in(timeline, redis_back, end)
    for i, sec in enumerate(secs):
        ratio = hit_ratio(secs[max(0, i - 2) : i + 1])
        if ratio is not None and ratio >= target:
            return max(0.0, float(sec["t"]) + 1 - redis_back)
    return None


def check(name: str, value: Any, threshold: str, passed: bool) -> dict[str, Any]:
    result = "PASS" if passed else "FAIL"
    return {"check": name, "value": value, "threshold": threshold, "passed": bool(passed), "result": result}


def not_measured(name: str, missing: str, threshold: str) -> dict[str, Any]:
    """A check the run could not make: it does not fail the verdict, and says what was missing."""
    return {"check": name, "value": f"n/a: {missing}", "threshold": threshold, "passed": True, "result": "n/a"}


def rate_check(figures: dict[str, Any], target_rps: float, th: Thresholds) -> dict[str, Any]:
    """Did the warm phase reach its target rate? Reported (WARN), never failed: the machine was busy."""
    name, threshold = f"load reached [{figures['phase']}]", f">= {th.min_rate_share:.0%} of {target_rps:g} req/s"
    share = figures["rps"] / target_rps if target_rps > 0 else 1.0
    value = f"{figures['rps']:g} req/s ({share:.0%} of target)"
    if share >= th.min_rate_share:
        return check(name, value, threshold, True)
    return {"check": name, "value": value, "threshold": threshold, "passed": True, "result": "WARN"}


def sharing_checks(
    figures: dict[str, Any], timeline: dict[str, Any], stub: dict[str, int], target_rps: float, th: Thresholds
) -> list[dict[str, Any]]:
    """Zero failures, cross-instance hits, and one upstream call per unique key whose requests completed."""
    out = [
        check("failed requests", figures["failures"], "== 0", figures["failures"] == 0),
        check("cross-instance hits", figures["cross_instance_hits"], "> 0", figures["cross_instance_hits"] > 0),
    ]
    asked, completed = timeline["unique_keys"], timeline.get("completed_keys", timeline["unique_keys"])
    for label, kind, counter in (
        ("embedding inputs / unique embedding keys", "embedding", "embedding_inputs"),
        ("chat requests / unique chat keys", "chat", "chat_requests"),
        ("upstream streams / unique streaming keys", "stream", "chat_streams"),
    ):
        if counter not in stub:
            out.append(not_measured(label, "the stub's counters did not answer", "= 1.00 (exactly)"))
            continue
        calls = stub[counter]
        keys, cut = completed.get(kind, 0), asked.get(kind, 0) - completed.get(kind, 0)
        value = f"{calls}/{keys} = {calls / keys:.2f}" if keys else f"{calls}/0"
        if cut:
            value += f" ({cut} key(s) cut off at stop, not counted)"
        threshold = "= 1.00 (exactly)" + (f", + 0..{cut} for cut-off keys" if cut else "")
        out.append(check(label, value, threshold, keys > 0 and keys <= calls <= keys + cut))
    out.append(rate_check(figures, target_rps, th))
    return out


def model_checks(fig: dict[str, Any], th: Thresholds) -> list[dict[str, Any]]:
    """A model phase: cold misses answered with a mapped status in time, and at most one model call per request."""
    phase, out = fig["phase"], []
    threshold = f"each mapped (429/502/504) or 200, within {th.deadline_s:g} s"
    if fig["cold_requests"] == 0:
        out.append(not_measured(f"cold misses [{phase}]", "no cold key was requested in this phase", threshold))
    else:
        fine = fig["cold_requests"] - fig["cold_failures"]
        counts = {"200": fine - sum(fig["mapped"].values()), **fig["mapped"]}
        answered = ", ".join(f"{status}x{n}" for status, n in sorted(counts.items()) if n)
        value = f"{fine}/{fig['cold_requests']} ({answered})"
        out.append(check(f"cold misses [{phase}]", value, threshold, fig["cold_failures"] == 0))
    name = f"upstream calls / client requests [{phase}]"
    calls, requests = fig["upstream_calls"], fig["requests"]
    if calls is None or requests == 0:
        missing = "no stub counters for this phase" if calls is None else "no request in this phase"
        out.append(not_measured(name, missing, "<= 1.00"))
    else:
        out.append(check(name, f"{calls}/{requests} = {calls / requests:.2f}", "<= 1.00", calls <= requests))
    return out


def stream_check(fig: dict[str, Any]) -> dict[str, Any]:
    """Zero failed streamed answers in a phase; n/a when none was asked (the claim would hold vacuously)."""
    name, threshold = f"failed streams [{fig['phase']}]", "== 0"
    streams, failed = fig.get("stream_requests", 0), fig.get("stream_failures", 0)
    if not streams:
        return not_measured(name, "no streamed request in this phase", threshold)
    ttfc = "-" if fig.get("ttfc_p95_ms") is None else f"{fig['ttfc_p95_ms']:.0f} ms"
    return check(name, f"{failed} of {streams} (TTFC p95 {ttfc})", threshold, failed == 0)


def kill_cut_check(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """Streams the replica kill cut mid-answer: counted apart and reported (WARN), never hidden."""
    name, threshold = "streams cut by the replica kill", "reported, not failed (any other cut fails)"
    cut = sum(f.get("stream_cut_by_kill", 0) for f in figures)
    if not cut:
        return check(name, 0, threshold, True)
    value = f"{cut} (in flight on the killed replica; no proxy can retry an answer it has begun)"
    return {"check": name, "value": value, "threshold": threshold, "passed": True, "result": "WARN"}


def recovery_check(
    timeline: dict[str, Any], phases: list[Phase], redis_back: float | None, th: Thresholds
) -> dict[str, Any]:
    """Hit ratio back to the warm level within recovery_s of Redis answering; n/a when a figure is missing."""
    name, threshold = "hit ratio recovery after redis-start", f"<= {th.recovery_s:g} s"
    warm_level = warm_baseline(timeline, phases[0])[1]
    if redis_back is None:
        return not_measured(name, "redis-start did not complete (see its command check)", threshold)
    if warm_level is None:
        return not_measured(name, "no cacheable answer in the warm phase to set the level", threshold)
    target = warm_level - th.hit_tolerance
    end = phases[-1].end
    rec = recovery_seconds(timeline, redis_back, end, target)
    if rec is None and end - redis_back < th.recovery_s:
        return not_measured(name, f"the run ended {end - redis_back:.0f} s after Redis was back", threshold)
    shown = "never" if rec is None else f"{rec:.0f} s (to {target:.2f})"
    return check(name, shown, threshold, rec is not None and rec <= th.recovery_s)


def chaos_checks(
    timeline: dict[str, Any],
    phases: list[Phase],
    figures: list[dict[str, Any]],
    redis_back: float | None,
    target_rps: float,
    th: Thresholds,
) -> list[dict[str, Any]]:
    """Failures, p95 and model checks per phase, recovery after Redis returns, and whether the load was reached."""
    warm_p95 = warm_baseline(timeline, phases[0])[0]
    bound = th.p95_factor * warm_p95 + th.p95_slack_ms if warm_p95 is not None else None
    out = [rate_check(figures[0], target_rps, th)]
    for fig in figures:
        value = fig["failures"]
        if fig["phase"] in MODEL_PHASES:
            value = f"{value} (warm keys {fig['warm_failures']})"
        out.append(check(f"failed requests [{fig['phase']}]", value, "== 0", fig["failures"] == 0))
    for fig in figures[1:]:
        model = fig["phase"] in MODEL_PHASES
        name = f"p95 of warm requests [{fig['phase']}]" if model else f"p95 [{fig['phase']}]"
        p95 = fig["warm_p95_ms"] if model else fig["p95_ms"]
        if bound is None or p95 is None:
            missing = "no warm-phase latencies" if bound is None else "no request in this phase"
            out.append(not_measured(name, missing, "<= 2 x warm p95 + slack"))
        else:
            out.append(check(name, f"{p95:.0f} ms", f"<= {bound:.0f} ms", p95 <= bound))
        if model:
            out += model_checks(fig, th)
        if fig["phase"] in REDIS_PHASES:
            out.append(stream_check(fig))
    if any(p.name == "redis-down" for p in phases):
        out.append(recovery_check(timeline, phases, redis_back, th))
    if any(p.name == "replica-down" for p in phases):
        out.append(kill_cut_check(figures))
    return out


def notes(
    timeline: dict[str, Any], phases: list[Phase], figures: list[dict[str, Any]], upstream_timeout_s: float
) -> list[str]:
    """What a reader should know that no threshold says: how long misses kept failing after the model healed,
    and whether the stack's timeout is longer than the run assumed."""
    out = []
    for phase, fig in zip(phases, figures, strict=True):
        if phase.name == "model-back":
            failing = [s["t"] for s in seconds_in(timeline, phase.start, phase.end) if s.get("mapped")]
            last = f"{max(failing) + 1 - phase.start:.0f} s" if failing else "0 s"
            out.append(f"model-back: cold misses got mapped errors until {last} after the model healed (breakers)")
        if phase.name == "model-slow" and fig["cold_requests"] and not fig["mapped"].get("504"):
            out.append(
                f"model-slow: no 504 among {fig['cold_requests']} cold misses; the stack's UPSTREAM_TIMEOUT looks "
                f"longer than --upstream-timeout {upstream_timeout_s:g} s (start it with "
                f"UPSTREAM_TIMEOUT={upstream_timeout_s:g} make up-scaled)"
            )
    return out


def summary_line(figures: list[dict[str, Any]], unique: dict[str, int], stub: dict[str, int]) -> str:
    """Failures, cross-instance hits and upstream calls per unique key, for the plot's title."""
    keys = unique.get("embedding", 0) + unique.get("chat", 0) + unique.get("stream", 0)
    calls = stub.get("embedding_inputs", 0) + stub.get("chat_requests", 0) + stub.get("chat_streams", 0)
    ratio = f"{calls / keys:.2f}" if keys else "n/a"
    mapped = sum(sum(f["mapped"].values()) for f in figures if f["phase"] in MODEL_PHASES)
    return (
        f"failed requests {sum(f['failures'] for f in figures)}, mapped model errors (cold keys) {mapped}, "
        f"cross-instance hits {sum(f['cross_instance_hits'] for f in figures)}, upstream calls / unique keys "
        f"{calls}/{keys} = {ratio}"
    )
