"""The short verdict table printed at the end of a run (plain text, readable in a terminal or CI log)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "ms":
        return f"{value:.0f}"
    return str(value)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _mapped(p: dict[str, Any]) -> str:
    mapped = p.get("mapped") or {}
    return " ".join(f"{status}x{n}" for status, n in sorted(mapped.items())) or "-"


def _print_streams(phases: list[dict[str, Any]]) -> None:
    """Streamed answers per phase: how many, failed, how they were served, time to first chunk and in total."""
    rows = [
        [
            p["phase"],
            str(p.get("stream_requests", 0)),
            str(p.get("stream_failures", 0)),
            str(p.get("stream_cut_by_kill", 0)),
            str(p.get("stream_mapped", 0)),
            " ".join(f"{role} {n}" for role, n in sorted((p.get("stream_roles") or {}).items())) or "-",
            _fmt(p.get("ttfc_p50_ms"), "ms"),
            _fmt(p.get("ttfc_p95_ms"), "ms"),
            _fmt(p.get("stream_total_p50_ms"), "ms"),
            _fmt(p.get("stream_total_p95_ms"), "ms"),
        ]
        for p in phases
    ]
    headers = [
        "phase",
        "streams",
        "failed",
        "cut by kill",
        "mapped (cold)",
        "X-Cache-Stream",
        "TTFC p50",
        "TTFC p95",
        "total p50",
        "total p95",
    ]
    print(_table(headers, rows))


def print_verdict(verdict: dict[str, Any]) -> None:
    """Phase figures, the checks with their thresholds, notes, and one PASS/FAIL line."""
    phases = [
        [
            p["phase"],
            f"{max(0.0, p['from_s']):.0f}-{p['to_s']:.0f}",
            str(p["requests"]),
            f"{p['rps']:.1f}",
            str(p["failures"]),
            f"{p.get('warm_requests', '-')}/{p.get('cold_requests', '-')}",
            _mapped(p),
            str(p.get("stale", "-")),
            _fmt(p.get("upstream_calls")),
            _fmt(p["p95_ms"], "ms"),
            _fmt(p.get("max_ms"), "ms"),
            _fmt(p["hit_ratio"], "ratio"),
            str(p["cross_instance_hits"]),
            _fmt(p["redis_tier_share"], "ratio"),
        ]
        for p in verdict["phases"]
    ]
    headers = [
        "phase",
        "t (s)",
        "requests",
        "req/s",
        "failed",
        "warm/cold",
        "mapped (cold)",
        "stale",
        "model calls",
        "p95 ms",
        "max ms",
        "hit ratio",
        "cross-inst hits",
        "redis-tier share",
    ]
    print()
    print(f"== {verdict['scenario']} verdict ==")
    print(_table(headers, phases))
    stub, unique = verdict["stub"], verdict.get("completed_keys") or verdict["unique_keys"]
    print(
        f"upstream stub: {stub.get('embedding_inputs')} embedding inputs "
        f"({stub.get('embedding_requests')} requests), {stub.get('chat_requests')} chat requests; "
        f"unique keys whose requests completed: {unique.get('embedding')} embedding, {unique.get('chat')} chat"
    )
    print(
        f"streamed chat: {stub.get('chat_streams')} upstream streams; unique streaming keys whose requests "
        f"completed: {unique.get('stream')}"
    )
    _print_streams(verdict["phases"])
    keys = sum(unique.get(kind) or 0 for kind in ("embedding", "chat", "stream"))
    calls = sum(stub.get(counter) or 0 for counter in ("embedding_inputs", "chat_requests", "chat_streams"))
    if verdict["scenario"] == "chaos" and keys:
        print(
            f"upstream calls / unique keys = {calls / keys:.2f} (not a threshold here: while Redis is down each "
            "replica computes for itself, and a miss the model failed is asked again later)"
        )
    print()
    checks = [
        [c["check"], str(c["value"]), c["threshold"], c.get("result") or ("PASS" if c["passed"] else "FAIL")]
        for c in verdict["checks"]
    ]
    print(_table(["check", "value", "threshold", "result"], checks))
    print("thresholds:")
    for line in verdict["thresholds"]:
        print(f"  - {line}")
    for line in verdict.get("notes") or []:
        print(f"  note: {line}")
    reasons = verdict["totals"].get("failure_reasons") or {}
    for reason, n in list(reasons.items())[:5]:
        print(f"  failure x{n}: {reason}")
    print(f"RESULT: {verdict.get('result') or ('PASS' if verdict['passed'] else 'FAIL')}")
