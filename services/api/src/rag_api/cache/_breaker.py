"""A circuit breaker: after enough consecutive Redis failures it opens, and Redis calls stop at once."""

from __future__ import annotations

import time
from typing import Literal

State = Literal["closed", "open"]


class CircuitBreaker:
    """Open after `failure_threshold` consecutive failures; something else (a probe) closes it again."""

    def __init__(self, failure_threshold: int = 1) -> None:
        self.failure_threshold = failure_threshold
        self.state: State = "closed"
        self.opened_at = 0.0
        self.times_opened = 0
        self._failures = 0

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    def record_success(self) -> None:
        self._failures = 0

    def record_failure(self) -> bool:
        """Count a failure; True when this failure opened the breaker."""
        self._failures += 1
        if self.state == "closed" and self._failures >= self.failure_threshold:
            self.state, self.opened_at = "open", time.monotonic()
            self.times_opened += 1
            return True
        return False

    def close(self) -> None:
        self.state, self._failures = "closed", 0

    def open_for(self) -> float:
        return time.monotonic() - self.opened_at if self.state == "open" else 0.0
