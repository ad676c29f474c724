"""One deadline per request, shared by everything the request waits on (a peer's lease, the upstream call).

The deadline lives in a context variable: a task spawned while it is set (the single-flight leader) inherits
the deadline of the request that started it, and code that runs outside a request sees none.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DeadlineExceededError", "deadline_at", "remaining", "request_deadline"]

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("rag_request_deadline", default=None)


class DeadlineExceededError(TimeoutError):
    """The request's time budget ran out before its answer was ready."""


@contextmanager
def request_deadline(seconds: float) -> Iterator[float]:
    """Run the block with a deadline `seconds` from now (monotonic clock); yields the deadline."""
    at = time.monotonic() + seconds
    token = _deadline.set(at)
    try:
        yield at
    finally:
        _deadline.reset(token)


def deadline_at() -> float | None:
    """The current request's deadline (time.monotonic() seconds), or None outside a request."""
    return _deadline.get()


def remaining(default: float) -> float:
    """Seconds left before the deadline (may be negative), or `default` when no deadline is set."""
    at = _deadline.get()
    return default if at is None else at - time.monotonic()
