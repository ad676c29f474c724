"""Single flight: one computation per missing key, inside a process (shared futures) and across processes
(a short Redis lease per key, `SET NX PX`, whose holder computes while the others wait for its value).

The lease is short (CACHE_LEASE_TTL, 3 s) and its holder renews it every third of that while it computes:
a computation may take as long as the upstream allows without a second one starting elsewhere, and a
holder that dies stalls the others for one lease TTL at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ._errors import CacheUnavailableError
from ._keys import lease_key

if TYPE_CHECKING:
    from ._manager import CacheManager, Lookup
    from ._redis import Claim, RedisTier


def _claim(tier: RedisTier, *, keys: list[str], token: str, ttl: float) -> Awaitable[list[Claim]]:
    return tier.claim(keys, [lease_key(k) for k in keys], token, ttl)


ComputeMany = Callable[[list[str]], Awaitable[Sequence[Any]]]


class SingleFlight:
    """The flights of one manager in one event loop."""

    def __init__(self, manager: CacheManager, loop: asyncio.AbstractEventLoop) -> None:
        self._m = manager
        self._loop = loop
        self._futures: dict[str, asyncio.Future[Lookup]] = {}
        self._watchers: dict[str, asyncio.Event] = {}

    async def run(
        self, missing: list[str], named: dict[str, str], compute_many: ComputeMany, seconds: float
    ) -> dict[str, Lookup]:
        """Join the flights already under way for some keys, lead new ones for the rest, await them all."""
        lead = [f for f in missing if f not in self._futures]
        self._m.counters.coalesced += len(missing) - len(lead)
        for full in lead:
            self._futures[full] = self._loop.create_future()
        waits = {full: self._futures[full] for full in missing}
        if lead:
            self._m._spawn(self._lead(lead, named, compute_many, seconds))
        return {full: await asyncio.shield(fut) for full, fut in waits.items()}

    def notify(self, fulls: Iterable[str]) -> None:
        """A peer wrote these keys: wake whoever waits on them now rather than at its next poll."""
        for full in fulls:
            event = self._watchers.get(full)
            if event is not None:
                event.set()

    async def _lead(self, fulls: list[str], named: dict[str, str], compute_many: ComputeMany, seconds: float) -> None:
        from ._manager import Lookup, _Unavailable

        m = self._m
        token = uuid.uuid4().hex
        deadline = time.monotonic() + m.policy.lease_wait
        pending = list(fulls)
        try:
            while pending:
                claims = (
                    await m._redis_op(partial(_claim, keys=pending, token=token, ttl=m.policy.lease_ttl))
                    if time.monotonic() < deadline
                    else None  # waited long enough for peers: compute here, without a lease
                )
                if claims is None or isinstance(claims, _Unavailable):
                    await self._compute(pending, named, compute_many, seconds, token=None)
                    return
                mine, theirs, release = [], [], []
                for full, (won, data) in zip(pending, claims, strict=True):
                    entry, memory_data = m._decode_for_memory(data) if data is not None else (None, b"")
                    if entry is not None and not m._wants_refresh(entry):
                        m.counters.peer_hits += 1
                        m.memory.set_nowait(full, memory_data, m._remaining(entry))
                        self._settle(full, Lookup(entry.value, "redis", True))
                        if won:
                            release.append(full)
                    elif won:
                        mine.append(full)
                    else:
                        theirs.append(full)
                if release:
                    await self._release(release, token)
                if mine:
                    await self._compute(mine, named, compute_many, seconds, token=token)
                pending = theirs
                if pending:
                    await self._wait(pending)
        except Exception as exc:
            for full in fulls:
                fut = self._futures.get(full)
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # the callers re-raise it; don't also log it as never retrieved
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
    ) -> None:
        from ._manager import Lookup

        started = time.monotonic()
        renewal = self._loop.create_task(self._renew(mine, token)) if token is not None else None
        try:
            values = list(await compute_many([named[f] for f in mine]))
            if len(values) != len(mine):
                raise ValueError(f"compute returned {len(values)} values for {len(mine)} keys")
            self._m.counters.computes += len(mine)
            await self._m._store(dict(zip(mine, values, strict=True)), seconds, delta=time.monotonic() - started)
            for full, value in zip(mine, values, strict=True):
                self._settle(full, Lookup(value, "none", False))
        finally:
            if renewal is not None:
                renewal.cancel()
            if token is not None:
                await self._release(mine, token)

    async def _renew(self, fulls: list[str], token: str) -> None:
        ttl = self._m.policy.lease_ttl
        leases = [lease_key(f) for f in fulls]
        while True:
            await asyncio.sleep(ttl / 3)
            with contextlib.suppress(CacheUnavailableError):
                await self._m._redis_op(lambda r: r.extend_leases(leases, token, ttl))

    async def _release(self, fulls: list[str], token: str) -> None:
        leases = [lease_key(f) for f in fulls]
        with contextlib.suppress(CacheUnavailableError):
            await self._m._redis_op(lambda r: r.release_leases(leases, token))

    async def _wait(self, pending: list[str]) -> None:
        event = asyncio.Event()
        for full in pending:
            self._watchers[full] = event
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._m.policy.lease_poll_interval):
                    await event.wait()
        finally:
            for full in pending:
                if self._watchers.get(full) is event:
                    del self._watchers[full]

    def _settle(self, full: str, lookup: Lookup) -> None:
        fut = self._futures.get(full)
        if fut is not None and not fut.done():
            fut.set_result(lookup)
