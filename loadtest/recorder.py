"""Counts what the load users saw, second by second: requests, failures, latencies and cache outcomes.

One `Recorder` lives in the Locust process. It learns which instance computed each (tenant, key) from the
MISS/PARTIAL responses (their `X-Instance` header), so a later HIT served by another instance is counted
as a cross-instance hit: proof that the value travelled through the shared tier. It also knows which keys
are warm (answered 200 before) and which requests completed, so a key whose request was cut off when the
run stopped is counted apart. Streamed chat answers (`stream` in a request's context) also leave their time
to first content chunk, total time and `X-Cache-Stream` role (replay, leader, follower).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE_OUTCOMES = ("HIT", "MISS", "PARTIAL", "BYPASS", "STALE")
KINDS = ("embedding", "chat", "stream")  # key spaces; "stream" is the streamed chat questions (kept disjoint)


@dataclass
class Second:
    """Everything observed during one wall-clock second."""

    requests: int = 0
    failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    cache: Counter[str] = field(default_factory=Counter)
    tiers: Counter[str] = field(default_factory=Counter)
    cross_instance_hits: int = 0
    # Warm requests asked only for keys answered 200 before; their latencies apart from the cold ones'.
    warm_latencies_ms: list[float] = field(default_factory=list)
    cold_latencies_ms: list[float] = field(default_factory=list)
    warm_failures: int = 0
    mapped: Counter[str] = field(default_factory=Counter)  # cold requests answered a mapped model error
    stream_requests: int = 0
    stream_failures: int = 0
    stream_mapped: int = 0  # cold streams that ended with a mapped model error event
    ttfc_ms: list[float] = field(default_factory=list)  # time to first content chunk of each stream
    stream_total_ms: list[float] = field(default_factory=list)
    stream_roles: Counter[str] = field(default_factory=Counter)  # X-Cache-Stream of the streams answered
    stream_cuts: list[list[float]] = field(default_factory=list)  # [sent, broke off, warm] of each cut stream

    def to_json(self, t: int) -> dict[str, Any]:
        return {
            "t": t,
            "requests": self.requests,
            "failures": self.failures,
            "p95_ms": percentile(self.latencies_ms, 95),
            "max_ms": max(self.latencies_ms, default=None),
            "latencies_ms": [round(x, 1) for x in self.latencies_ms],
            "cache": dict(self.cache),
            "tiers": dict(self.tiers),
            "cross_instance_hits": self.cross_instance_hits,
            "warm_requests": len(self.warm_latencies_ms),
            "cold_requests": len(self.cold_latencies_ms),
            "warm_failures": self.warm_failures,
            "warm_latencies_ms": [round(x, 1) for x in self.warm_latencies_ms],
            "cold_latencies_ms": [round(x, 1) for x in self.cold_latencies_ms],
            "mapped": dict(self.mapped),
            "stream_requests": self.stream_requests,
            "stream_failures": self.stream_failures,
            "stream_mapped": self.stream_mapped,
            "ttfc_ms": [round(x, 1) for x in self.ttfc_ms],
            "stream_total_ms": [round(x, 1) for x in self.stream_total_ms],
            "stream_roles": dict(self.stream_roles),
            "stream_cuts": self.stream_cuts,
        }


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (the value below which `pct`% of samples fall), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


class Recorder:
    """Per-second timeline plus run totals; `dump()` writes them as JSON for the analysis and the plot."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new run from the web UI starts from zero)."""
        self.seconds: dict[int, Second] = {}
        self.computed_by: dict[tuple[str, ...], str] = {}
        self.unique_keys: dict[str, set[tuple[str, ...]]] = {kind: set() for kind in KINDS}
        self.answered_keys: set[tuple[str, ...]] = set()
        self.completed_keys: dict[str, set[tuple[str, ...]]] = {kind: set() for kind in KINDS}
        self.instances: Counter[str] = Counter()
        self.failure_reasons: Counter[str] = Counter()
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    def _second(self, now: float | None = None) -> Second:
        t = int(now if now is not None else time.time())
        return self.seconds.setdefault(t, Second())

    def on_request(
        self,
        response_time: float,
        exception: BaseException | None,
        name: str,
        start_time: float | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        """Locust `request` listener body: one finished request, counted in the second it was *sent*.

        Counting by start time puts a request that hangs across a phase boundary in the phase that caused it.
        `context` carries what the user knew: `warm` (bool) and `mapped` (the status of a mapped model error);
        for a stream also `stream` (True), `ttfc_ms` (None when no content came), `stream_role`, and for one
        whose connection broke off mid-answer `stream_cut_at` (epoch seconds).
        """
        sec = self._second(start_time)
        sec.requests += 1
        sec.latencies_ms.append(float(response_time))
        ctx = context or {}
        if "warm" in ctx:
            (sec.warm_latencies_ms if ctx["warm"] else sec.cold_latencies_ms).append(float(response_time))
        if ctx.get("mapped"):
            sec.mapped[str(ctx["mapped"])] += 1
        if ctx.get("stream"):
            sec.stream_requests += 1
            sec.stream_failures += exception is not None
            sec.stream_mapped += bool(ctx.get("mapped"))
            sec.stream_total_ms.append(float(response_time))
            if ctx.get("ttfc_ms") is not None:
                sec.ttfc_ms.append(float(ctx["ttfc_ms"]))
            if ctx.get("stream_role"):
                sec.stream_roles[str(ctx["stream_role"])] += 1
            if exception is not None and ctx.get("stream_cut_at"):
                sent = start_time if start_time is not None else time.time()
                sec.stream_cuts.append(
                    [round(sent, 3), round(float(ctx["stream_cut_at"]), 3), float(bool(ctx.get("warm")))]
                )
        if exception is not None:
            sec.failures += 1
            sec.warm_failures += bool(ctx.get("warm"))
            self.failure_reasons[f"{name}: {str(exception)[:120]}"] += 1

    def is_warm(self, keys: list[tuple[str, ...]]) -> bool:
        """True when every key was answered 200 before (a cache that works holds them all)."""
        return all(key in self.answered_keys for key in keys)

    def note_completed(self, kind: str, keys: list[tuple[str, ...]]) -> None:
        """The request for `keys` got an answer (any status): its keys were not cut off by the end of the run."""
        self.completed_keys[kind].update(keys)

    def note_keys(self, kind: str, keys: list[tuple[str, ...]]) -> None:
        """Remember the keys a request asked for, before it is sent (the 'unique keys' denominator)."""
        self.unique_keys[kind].update(keys)

    def on_cache_outcome(
        self, keys: list[tuple[str, ...]], cache: str, tier: str, instance: str, computed: bool = True
    ) -> None:
        """Custom `cache_outcome` listener body: the cache headers of one successful response; `computed` is
        False for a MISS that another instance computed (a stream follower)."""
        sec = self._second()
        sec.cache[cache if cache in CACHE_OUTCOMES else "OTHER"] += 1
        sec.tiers[tier or "none"] += 1
        self.instances[instance] += 1
        self.answered_keys.update(keys)
        if cache in ("MISS", "PARTIAL") and computed:
            for key in keys:
                self.computed_by.setdefault(key, instance)
        elif cache == "HIT":
            makers = {self.computed_by.get(key) for key in keys} - {None}
            if makers - {instance}:
                sec.cross_instance_hits += 1

    def totals(self) -> dict[str, Any]:
        cache: Counter[str] = Counter()
        tiers: Counter[str] = Counter()
        mapped: Counter[str] = Counter()
        for sec in self.seconds.values():
            cache.update(sec.cache)
            tiers.update(sec.tiers)
            mapped.update(sec.mapped)
        return {
            "requests": sum(s.requests for s in self.seconds.values()),
            "failures": sum(s.failures for s in self.seconds.values()),
            "stream_requests": sum(s.stream_requests for s in self.seconds.values()),
            "stream_failures": sum(s.stream_failures for s in self.seconds.values()),
            "mapped": dict(mapped),
            "cache": dict(cache),
            "tiers": dict(tiers),
            "cross_instance_hits": sum(s.cross_instance_hits for s in self.seconds.values()),
            "instances": dict(self.instances),
            "failure_reasons": dict(self.failure_reasons.most_common(20)),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "seconds": [sec.to_json(t) for t, sec in sorted(self.seconds.items())],
            "totals": self.totals(),
            "unique_keys": {kind: len(keys) for kind, keys in self.unique_keys.items()},
            "completed_keys": {kind: len(keys) for kind, keys in self.completed_keys.items()},
            "unanswered_keys": sorted(
                "|".join(k) for keys in self.unique_keys.values() for k in keys - self.answered_keys
            )[:20],
        }

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)
