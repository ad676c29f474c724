"""Redis host names resolved without piling up lookups.

asyncio's `open_connection` resolves a name in the loop's default executor, a handful of threads that the
model client's own lookups share. While Redis is down, the breaker probe and the invalidation listener of
each cache retry every 0.25 s, and a connect timeout abandons the coroutine but not the lookup: where the
resolver is slow for the name (Docker's DNS for a stopped container), the threads fill with Redis lookups
and the model client's lookup waits behind them, until every cache miss times out.

Here a process resolves a Redis host in a thread of its own, at most one lookup per host at a time (callers
join the lookup under way, each waiting no longer than its connect timeout), and remembers the answer for
a few seconds, or a failure for one second. IP literals and Unix sockets are never looked up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aredis

__all__ = ["HostResolver", "ResolvingConnection", "resolver"]

Lookup = Callable[..., list[tuple[Any, ...]]]


class HostResolver:
    """One per process: a single lookup thread, one lookup in flight per host, answers cached briefly."""

    def __init__(self, lookup: Lookup | None = None, *, ttl: float = 5.0, failure_ttl: float = 1.0) -> None:
        self.lookup = lookup  # None: socket.getaddrinfo, looked up at each call
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self.lookups = 0
        self._answers: dict[tuple[str, int], tuple[float, str | None]] = {}
        self._in_flight: dict[tuple[str, int], concurrent.futures.Future[str]] = {}
        self._lock = threading.Lock()
        self._executor: tuple[concurrent.futures.ThreadPoolExecutor, int] | None = None

    async def resolve(self, host: str, port: int, within: float | None) -> str:
        """An address for `host`, or redis.ConnectionError (a failed lookup, or none `within` seconds)."""
        if _is_ip(host):
            return host
        key = (host, port)
        now = time.monotonic()
        answer = self._answers.get(key)
        if answer is not None and answer[0] > now:
            if answer[1] is None:
                raise redis.ConnectionError(f"cannot resolve {host} (a lookup failed less than a second ago)")
            return answer[1]
        future = self._lookup_future(key)
        try:
            async with asyncio.timeout(within):
                return await asyncio.shield(asyncio.wrap_future(future))
        except TimeoutError:
            raise redis.ConnectionError(f"resolving {host} took longer than {within}s") from None
        except OSError as exc:
            raise redis.ConnectionError(f"cannot resolve {host}: {exc}") from exc

    def _lookup_future(self, key: tuple[str, int]) -> concurrent.futures.Future[str]:
        with self._lock:
            future = self._in_flight.get(key)
            if future is None:
                self.lookups += 1
                future = self._in_flight[key] = self._pool().submit(self._look_up, key)
            return future

    def _look_up(self, key: tuple[str, int]) -> str:
        host, port = key
        try:
            infos = (self.lookup or socket.getaddrinfo)(host, port, type=socket.SOCK_STREAM)
            address = str(infos[0][4][0])
        except Exception:
            self._remember(key, None, self.failure_ttl)
            raise
        self._remember(key, address, self.ttl)
        return address

    def _remember(self, key: tuple[str, int], address: str | None, ttl: float) -> None:
        with self._lock:
            self._answers[key] = (time.monotonic() + ttl, address)
            self._in_flight.pop(key, None)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None or self._executor[1] != os.getpid():  # threads do not survive a fork
            self._executor = (
                concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="redis-resolver"),
                os.getpid(),
            )
            self._in_flight.clear()
        return self._executor[0]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


resolver = HostResolver()


class ResolvingConnection(aredis.Connection):
    """redis-py's TCP connection, connecting to the address `resolver` found for its host."""

    async def _connect(self) -> None:
        host = self.host
        address = await resolver.resolve(host, self.port, self.socket_connect_timeout)
        self.host = address
        try:
            await super()._connect()  # type: ignore[no-untyped-call]
        finally:
            self.host = host
