"""The chaos schedule: which command starts which phase, and when (pure, no I/O).

The model phases come first, while Redis is up: a key answered 200 before a model phase is then in Redis,
so any replica must answer it whatever the model does. (After `redis-start` the replicas drop memory
entries written during the outage, so a key warmed while Redis was down need not be cached anywhere.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# (command, phase it starts, seconds in the default 120 s run). The commands: `deploy/stack.py`'s
# redis-kill, redis-start and replica-kill; model-* switch the upstream stub with POST /control.
CHAOS_PLAN = (
    ("", "warm", 20),
    ("model-down", "model-down", 10),  # every model call answers 503
    ("model-slow", "model-slow", 10),  # every model call takes longer than the API's UPSTREAM_TIMEOUT
    ("model-429", "model-429", 10),  # every model call answers 429 with Retry-After
    ("model-heal", "model-back", 10),  # healthy again; breakers close, misses are computed again
    ("redis-kill", "redis-down", 15),
    ("redis-start", "redis-back", 15),
    ("replica-kill", "replica-down", 12),
    ("", "recovered", 18),
)
DEFAULT_DURATION = float(sum(seconds for _, _, seconds in CHAOS_PLAN))
# Phases in which a cold key may be answered with a mapped model error (429, 502, 504) instead of 200.
MODEL_PHASES = frozenset(("model-down", "model-slow", "model-429", "model-back"))
# Phases that start with Redis killed or just restarted: streamed answers are checked apart in them.
REDIS_PHASES = frozenset(("redis-down", "redis-back"))


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # epoch seconds
    end: float


def chaos_plan(skip_replica: bool = False, skip_model: bool = False) -> list[tuple[str, str, float]]:
    """(command, phase, fraction of the run at which it starts) for the phases this run has."""
    kept = [
        (action, phase, seconds)
        for action, phase, seconds in CHAOS_PLAN
        if not (skip_replica and action == "replica-kill") and not (skip_model and phase in MODEL_PHASES)
    ]
    total = sum(seconds for _, _, seconds in kept)
    out, elapsed = [], 0.0
    for action, phase, seconds in kept:
        out.append((action, phase, elapsed / total))
        elapsed += seconds
    return out


def phase_start(t0: float, fraction: float, duration: float) -> float:
    """When a chaos phase starts: its fixed offset, rounded up to a whole second so that the timeline's
    one-second buckets never straddle a phase boundary (a request sent before the kill stays before it)."""
    return float(math.ceil(t0 + fraction * duration)) if fraction else t0


def chaos_phases(
    t0: float, end: float, duration: float, skip_replica: bool = False, skip_model: bool = False
) -> list[Phase]:
    """Phases from fixed offsets, so a late command shows as a late effect inside its phase."""
    marks = [(phase, phase_start(t0, frac, duration)) for _, phase, frac in chaos_plan(skip_replica, skip_model)]
    return [Phase(name, start, marks[i + 1][1] if i + 1 < len(marks) else end) for i, (name, start) in enumerate(marks)]


def widen(phases: list[Phase], timeline: dict[str, Any]) -> list[Phase]:
    """Stretch the first and last phase over the whole timeline (its buckets are whole seconds)."""
    secs = timeline["seconds"]
    if not secs:
        return phases
    first, last = phases[0], phases[-1]
    phases[0] = Phase(first.name, min(first.start, secs[0]["t"]), first.end)
    phases[-1] = Phase(last.name, phases[-1].start, max(last.end, secs[-1]["t"] + 1.0))
    return phases
