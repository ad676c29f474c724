"""Single flight: one computation per missing key, inside a process (shared futures) and across processes
(a short Redis lease per key, `SET NX PX`, whose holder computes while the others wait for its value).

The lease is short (CACHE_LEASE_TTL, 3 s) and its holder renews it every third of that while it computes:
a computation may take as long as the upstream allows without a second one starting elsewhere, and a
holder that dies stalls the others for one lease TTL at most.

A computation that fails is remembered for CACHE_FAILURE_TTL (2 s) when the caller gives a `FailureCodec`:
in this process, and in Redis next to the lease, so that the processes waiting on the lease (and whoever asks
for the key in that window) receive the failure instead of each calling a failing upstream again. A failure
is never stored as a value. Waiting is bounded by the request's deadline (`_deadline.py`) as well as by
CACHE_LEASE_WAIT, after which a waiter computes without a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson

from ._deadline import DeadlineExceededError, deadline_at
from ._errors import CacheUnavailableError
from ._invalidation import Notice
from ._keys import failure_key
from ._lookup import Lookup, Unavailable
from ._seams import FlightSeams

__all__ = ["ComputeMany", "FailureCodec", "SingleFlight"]

ComputeMany = Callable[[list[str]], Awaitable[Sequence[Any]]]
_MAX_REMEMBERED = 10_000


class FailureCodec(Protocol):
    """How a failed compute is shared: `encode` gives a JSON-safe dict (None: not shareable, e.g. the
    caller's own mistake), `decode` makes the exception that callers in other processes receive."""

    def encode(self, exc: Exception) -> dict[str, Any] | None: ...

    def decode(self, info: dict[str, Any]) -> Exception: ...


class SingleFlight:
    """The flights of one manager in one event loop, built on the manager's seams (`FlightSeams`): the Redis
    guard, the read rule (`CoherentMemory.accept` for a value a claim finds), the store of computed values."""

    def __init__(self, seams: FlightSeams) -> None:
        self._seams = seams
        self._loop = seams.loop
        self._guard = seams.guard
        self._coherent = seams.coherent
        self._policy = seams.policy
        self._counters = seams.counters
        self._futures: dict[str, asyncio.Future[Lookup]] = {}
        self._watchers: dict[str, asyncio.Event] = {}
        self._failures: dict[str, tuple[float, dict[str, Any]]] = {}

    async def run(
        self,
        missing: list[str],
        named: dict[str, str],
        compute_many: ComputeMany,
        seconds: float,
        codec: FailureCodec | None = None,
    ) -> dict[str, Lookup]:
        """Join the flights already under way for some keys, lead new ones for the rest, await them all."""
        if codec is not None:
            self._raise_remembered(missing, codec)
        lead = [f for f in missing if f not in self._futures]
        self._counters.coalesced += len(missing) - len(lead)
        for full in lead:
            self._futures[full] = self._loop.create_future()
        waits = {full: self._futures[full] for full in missing}
        if lead:
            self._seams.spawn(self._lead(lead, named, compute_many, seconds, codec))
        at = deadline_at()
        # The deadline is on the monotonic clock; the loop's clock may have another origin (uvloop).
        when = None if at is None else self._loop.time() + (at - time.monotonic())
        timeout = asyncio.timeout_at(when)
        try:
            async with timeout:
                return {full: await asyncio.shield(fut) for full, fut in waits.items()}
        except TimeoutError:
            if timeout.expired():
                raise DeadlineExceededError("the answer was not ready before the request's deadline") from None
            raise

    def notify(self, fulls: Iterable[str]) -> None:
        """A peer wrote these keys (or failed them): wake whoever waits on them now rather than at its next poll."""
        for full in fulls:
            event = self._watchers.get(full)
            if event is not None:
                event.set()

    def _raise_remembered(self, fulls: list[str], codec: FailureCodec) -> None:
        now = time.monotonic()
        for full in fulls:
            remembered = self._failures.get(full)
            if remembered is None:
                continue
            if remembered[0] > now:
                self._counters.failures_shared += 1
                raise codec.decode(remembered[1])
            del self._failures[full]

    def _remember(self, fulls: list[str], info: dict[str, Any]) -> None:
        ttl = self._policy.failure_ttl
        if len(self._failures) > _MAX_REMEMBERED:
            now = time.monotonic()
            self._failures = {k: v for k, v in self._failures.items() if v[0] > now}
        until = time.monotonic() + ttl
        for full in fulls:
            self._failures[full] = (until, info)

    async def _lead(
        self,
        fulls: list[str],
        named: dict[str, str],
        compute_many: ComputeMany,
        seconds: float,
        codec: FailureCodec | None,
    ) -> None:
        token = uuid.uuid4().hex
        lease_deadline = time.monotonic() + self._policy.lease_wait
        request_deadline = deadline_at()
        pending = list(fulls)
        try:
            while pending:
                now = time.monotonic()
                if request_deadline is not None and now >= request_deadline:
                    raise DeadlineExceededError("a peer was still computing when the request's deadline came")
                generation = self._coherent.generation
                claims = (
                    await self._seams.claim(pending, token)
                    if now < lease_deadline
                    else None  # waited long enough for peers: compute here, without a lease
                )
                if claims is None or isinstance(claims, Unavailable):
                    await self._compute(pending, named, compute_many, seconds, token=None, codec=codec)
                    return
                mine, theirs, release = [], [], []
                for full, (won, data, failed) in zip(pending, claims, strict=True):
                    found = None if data is None else self._coherent.accept(full, data, generation, refresh=True)
                    if found is not None:
                        self._counters.peer_hits += 1
                        self._settle(full, found)
                        if won:
                            release.append(full)
                    elif failed is not None and codec is not None and (info := _info(failed)) is not None:
                        self._counters.failures_shared += 1
                        self._remember([full], info)
                        self._fail(full, codec.decode(info))
                        if won:
                            release.append(full)
                    elif won:
                        mine.append(full)
                    else:
                        theirs.append(full)
                if release:
                    await self._seams.release(release, token)
                if mine:
                    await self._compute(mine, named, compute_many, seconds, token=token, codec=codec)
                pending = theirs
                if pending:
                    await self._wait(pending)
        except Exception as exc:
            for full in fulls:
                self._fail(full, exc)
        except BaseException:
            for full in fulls:
                fut = self._futures.get(full)
                if fut is not None and not fut.done():
                    fut.cancel()
            raise
        finally:
            for full in fulls:
                self._futures.pop(full, None)

    async def _compute(
        self,
        mine: list[str],
        named: dict[str, str],
        compute_many: ComputeMany,
        seconds: float,
        *,
        token: str | None,
        codec: FailureCodec | None,
    ) -> None:
        started = time.monotonic()
        renewal = self._loop.create_task(self._seams.renew(mine, token)) if token is not None else None
        try:
            try:
                values = list(await compute_many([named[f] for f in mine]))
            except Exception as exc:
                await self._share_failure(mine, exc, codec)
                raise
            if len(values) != len(mine):
                raise ValueError(f"compute returned {len(values)} values for {len(mine)} keys")
            self._counters.computes += len(mine)
            await self._seams.store(dict(zip(mine, values, strict=True)), seconds, time.monotonic() - started)
            for full, value in zip(mine, values, strict=True):
                self._settle(full, Lookup(value, "none", False))
        finally:
            if renewal is not None:
                renewal.cancel()
            if token is not None:
                await self._seams.release(mine, token)

    async def _share_failure(self, fulls: list[str], exc: Exception, codec: FailureCodec | None) -> None:
        """Remember the failure here and record it in Redis before the lease is released (see `claim`)."""
        self._counters.compute_failures += len(fulls)
        info = codec.encode(exc) if codec is not None else None
        ttl = self._policy.failure_ttl
        if info is None or ttl <= 0:
            return
        self._remember(fulls, info)
        notice = Notice(self._seams.sender, keys=tuple(fulls)).encode()
        data = orjson.dumps(info)
        failed = [failure_key(f) for f in fulls]
        with contextlib.suppress(CacheUnavailableError):
            await self._guard.call(lambda r: r.record_failure(failed, data, ttl, announce=notice))

    async def _wait(self, pending: list[str]) -> None:
        event = asyncio.Event()
        for full in pending:
            self._watchers[full] = event
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._policy.lease_poll_interval):
                    await event.wait()
        finally:
            for full in pending:
                if self._watchers.get(full) is event:
                    del self._watchers[full]

    def _settle(self, full: str, lookup: Lookup) -> None:
        fut = self._futures.get(full)
        if fut is not None and not fut.done():
            fut.set_result(lookup)

    def _fail(self, full: str, exc: BaseException) -> None:
        fut = self._futures.get(full)
        if fut is not None and not fut.done():
            fut.set_exception(exc)
            fut.exception()  # the callers re-raise it; don't also log it as never retrieved


def _info(data: bytes) -> dict[str, Any] | None:
    try:
        info = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return info if isinstance(info, dict) else None
