"""A circuit breaker per model deployment, per process: a model that keeps failing is not called again
for a cool-down; misses fail fast with the failure that opened it (or are served stale by the cache).

closed     calls go through; UPSTREAM_BREAKER_THRESHOLD consecutive failures (5xx, no connection, timeout,
           429) open it. Any other answer, 4xx included, proves the model alive and resets the count.
open       calls fail at once with the status of the failure that opened it and `Retry-After`, for
           UPSTREAM_BREAKER_COOLDOWN seconds (or the model's own Retry-After, when longer).
half_open  after the cool-down, one call (the probe) goes through while the others still fail fast; its
           success closes the breaker, its failure opens it for another cool-down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from rag_api.errors import ApiError, UpstreamError

__all__ = ["BreakerState", "ModelBreaker", "ModelBreakers"]

BreakerState = Literal["closed", "open", "half_open"]
STATE_VALUES: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(slots=True)
class ModelBreaker:
    """The breaker of one model; not thread-safe (one per event loop's process, used from that loop)."""

    model: str
    threshold: int
    cooldown: float
    state: BreakerState = "closed"
    failures: int = 0
    times_opened: int = 0
    fast_failures: int = 0
    opened_at: float = 0.0
    open_for: float = 0.0
    probing: bool = False
    last_error: ApiError | None = field(default=None, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def before_call(self) -> bool:
        """Let the call through (True when it is the half-open probe) or raise the remembered failure."""
        if self.state == "closed":
            return False
        left = self.opened_at + self.open_for - self.clock()
        if left <= 0 and not self.probing:
            self.state, self.probing = "half_open", True
            return True
        self.fast_failures += 1
        raise self._fast_failure(max(left, 0.0))

    def record(self, error: ApiError | None) -> None:
        """The outcome of a call that went through: None for an answer that proves the model alive."""
        self.probing = False
        if error is None:
            self.state, self.failures = "closed", 0
            return
        self.failures += 1
        self.last_error = error
        if self.state == "half_open" or self.failures >= self.threshold:
            if self.state == "closed":
                self.times_opened += 1
            self.state, self.opened_at = "open", self.clock()
            self.open_for = max(self.cooldown, _retry_after(error))

    def abandon(self) -> None:
        """A call that ended without an outcome (cancelled): another call may probe."""
        self.probing = False

    def snapshot(self) -> dict[str, object]:
        left = max(0.0, self.opened_at + self.open_for - self.clock()) if self.state != "closed" else 0.0
        return {
            "state": self.state,
            "consecutive_failures": self.failures,
            "times_opened": self.times_opened,
            "fast_failures": self.fast_failures,
            "retry_in": round(left, 3),
        }

    def _fast_failure(self, left: float) -> ApiError:
        last = self.last_error or UpstreamError("the upstream failed")
        retry = str(max(1, math.ceil(left)))
        detail = (
            f"the upstream for model {self.model!r} is failing ({last.detail}); "
            f"not calling it again for {retry} s (circuit open)"
        )
        return type(last)(detail, status=last.status, code=last.code, headers={**last.headers, "Retry-After": retry})


def _retry_after(error: ApiError) -> float:
    try:
        return float(error.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0


class ModelBreakers:
    """One breaker per model, made on first use; threshold 0 switches them off."""

    def __init__(self, threshold: int, cooldown: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self._breakers: dict[str, ModelBreaker] = {}

    def get(self, model: str) -> ModelBreaker | None:
        if self.threshold <= 0:
            return None
        breaker = self._breakers.get(model)
        if breaker is None:
            if len(self._breakers) >= 1024:  # model names come from clients: keep this bounded
                self._breakers = {m: b for m, b in self._breakers.items() if b.state != "closed"}
            breaker = self._breakers[model] = ModelBreaker(model, self.threshold, self.cooldown, clock=self.clock)
        return breaker

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {model: b.snapshot() for model, b in sorted(self._breakers.items())}
