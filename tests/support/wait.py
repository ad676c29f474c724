"""Wait for a condition with a deadline instead of sleeping a guessed time (deploy.readiness.wait_for, and its
async twin for tests that run an event loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from deploy.ports import free_port, port_open
from deploy.readiness import wait_for

__all__ = ["free_port", "port_open", "wait_until", "wait_until_async"]

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = 0.02, what: str = "") -> T:
    """deploy.readiness.wait_for (the project's one wait helper) polling faster: tests wait on events that take
    milliseconds. Raises NotReady, a TimeoutError."""
    return wait_for(predicate, timeout=timeout, what=what, interval=interval)


async def wait_until_async(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float,  # noqa: ASYNC109 - the twin of wait_until: the deadline belongs in its signature
    interval: float = 0.02,
    what: str = "",
) -> T:
    """The async twin of `wait_until`."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = await predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not true within {timeout}s: {what or predicate!r} (last error: {last_exc!r})")
        await asyncio.sleep(interval)
