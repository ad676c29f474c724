"""Shared in-flight streams: while one replica streams an answer from the model, identical requests of the
same school, on any replica, receive the same chunks as they arrive (from the start, then live) instead of
opening a second upstream stream.

- The lease of single flight (`lease:{key}`, renewed while producing) decides the leader. A value stream
  and a plain compute of the same key share it, so a plain request waits for a stream's stored answer and
  a stream follower of a plain compute replays its value.
- In a process, every reader of a key shares one `Broadcast`; across processes the leader appends each chunk
  to a Redis Stream (`stream:{key}`, about CACHE_STREAM_MAXLEN entries, expiring), which one task per process
  and key polls for the local readers.
- The end is an entry of its own: `ok` (the leader stored the assembled answer), or `error` with the failure
  (FailureCodec), which readers receive as an exception. A leader that dies leaves no end: its lease lapses,
  and a follower that had no chunk yet takes over; one that had chunks ends with an error, never a hang.
- The request's deadline bounds the wait for the first chunk; once chunks flow, a stream may last up to
  CACHE_STREAM_MAX_SECONDS in all (a long answer takes longer than any request budget; nginx's read timeout
  is between chunks, and so is the model client's). A reader that goes away (a client disconnect) does not
  stop the producer, which keeps reading for the other readers and for the cache until the stream ends.
- With Redis down each replica streams for itself (in-process sharing still holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, NamedTuple

import orjson

from ._deadline import DeadlineExceededError, deadline_at
from ._errors import CacheUnavailableError
from ._keys import failure_key, stream_key
from ._lookup import Lookup, Unavailable
from ._redis import Claim, RedisTier
from ._seams import FlightSeams
from ._singleflight import FailureCodec

__all__ = ["Broadcast", "StreamFlights", "StreamStart"]

Produce = Callable[[], AsyncIterator[bytes]]
Assemble = Callable[[list[bytes]], Any]
_MAXLEN = 10_000
_STREAM_TTL = 60.0


class Broadcast:
    """The chunks of one stream in this process, for any number of readers: from the start, then live."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done = False
        self.error: BaseException | None = None
        self.value: Lookup | None = None  # the stream was answered by a stored value instead of chunks
        self._wake = asyncio.Event()

    def push(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self._signal()

    def finish(self, *, error: BaseException | None = None, value: Lookup | None = None) -> None:
        if not self.done:
            self.done, self.error, self.value = True, error, value
            self._signal()

    def _signal(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def read(self) -> AsyncIterator[bytes | Lookup]:
        """Every chunk so far, then each new one; a Lookup when a stored value answers instead; raises the
        stream's failure."""
        i = 0
        while True:
            while i < len(self.chunks):
                yield self.chunks[i]
                i += 1
            if self.done:
                if self.error is not None:
                    raise self.error
                if self.value is not None and i == 0:
                    yield self.value
                return
            await self._wake.wait()


class StreamStart(NamedTuple):
    """What `StreamFlights.join` answers: the stream to read, and whether this process produces it."""

    broadcast: Broadcast
    role: str  # "leader" (this process calls the model) or "follower"


class StreamFlights:
    """The shared streams of one manager in one event loop."""

    def __init__(self, seams: FlightSeams) -> None:
        self._seams = seams
        self._loop = seams.loop
        self._guard = seams.guard
        self._coherent = seams.coherent
        self._policy = seams.policy
        self._counters = seams.counters
        self._local: dict[str, asyncio.Future[StreamStart]] = {}

    async def join(
        self, full: str, produce: Produce, assemble: Assemble, seconds: float, codec: FailureCodec | None
    ) -> StreamStart:
        """The stream of `full`: this process's, another replica's (followed), or a new one led from here."""
        start = self._local.get(full)
        created = start is None
        if start is None:
            start = self._local[full] = self._loop.create_future()
            self._seams.spawn(self._begin(full, start, produce, assemble, seconds, codec))
        begun = await asyncio.shield(start)
        return begun if created else StreamStart(begun.broadcast, "follower")

    async def _begin(
        self,
        full: str,
        start: asyncio.Future[StreamStart],
        produce: Produce,
        assemble: Assemble,
        seconds: float,
        codec: FailureCodec | None,
    ) -> None:
        broadcast = Broadcast()
        token = uuid.uuid4().hex
        try:
            claim = await self._claim(full, token)
        except BaseException as exc:
            self._local.pop(full, None)
            start.set_exception(exc)
            raise
        if isinstance(claim, Unavailable):  # no Redis: this process streams for itself
            start.set_result(StreamStart(broadcast, "leader"))
            await self._lead(full, broadcast, produce, assemble, seconds, codec, token=None)
            return
        won = claim[0]
        if await self._settled(full, claim, broadcast, token, codec):  # a stored value or a recorded failure
            self._local.pop(full, None)
            start.set_result(StreamStart(broadcast, "follower"))
            return
        if won:
            start.set_result(StreamStart(broadcast, "leader"))
            await self._lead(full, broadcast, produce, assemble, seconds, codec, token=token)
        else:
            start.set_result(StreamStart(broadcast, "follower"))
            await self._follow(full, broadcast, produce, assemble, seconds, codec)

    async def _lead(
        self,
        full: str,
        broadcast: Broadcast,
        produce: Produce,
        assemble: Assemble,
        seconds: float,
        codec: FailureCodec | None,
        *,
        token: str | None,
    ) -> None:
        """Read the model's stream to its end (or the deadline), for every reader and for the cache."""
        self._counters.computes += 1
        shared = token is not None
        key = stream_key(full)
        renewal = self._loop.create_task(self._seams.renew([full], token)) if token is not None else None
        started = time.monotonic()
        try:
            async with asyncio.timeout_at(self._loop_deadline()) as budget:
                first = True
                async for chunk in produce():
                    if first:  # flowing: from now on the stream's own bound, not the request's
                        budget.reschedule(self._loop.time() + self._policy.stream_max_seconds)
                    broadcast.push(chunk)
                    if shared:
                        await self._append(key, {"c": chunk}, first=first)
                    first = False
            value = assemble(broadcast.chunks)
            await self._seams.store({full: value}, seconds, time.monotonic() - started)
            if shared:
                await self._append(key, {"end": b"ok"})
            broadcast.finish()
        except Exception as exc:
            error: Exception = exc
            if isinstance(exc, TimeoutError) and not isinstance(exc, DeadlineExceededError):
                error = DeadlineExceededError("the stream did not end before the request's deadline")
            self._counters.compute_failures += 1
            broadcast.finish(error=error)
            if shared:
                info = codec.encode(error) if codec is not None else None
                payload = orjson.dumps(info or {"status": 502, "detail": "the stream failed"})
                await self._append(key, {"end": b"error", "e": payload})
                if info is not None and self._policy.failure_ttl > 0:
                    ttl = self._policy.failure_ttl
                    with contextlib.suppress(CacheUnavailableError):
                        await self._guard.call(lambda r: r.set_many({failure_key(full): payload}, ttl))
        finally:
            if renewal is not None:
                renewal.cancel()
            if token is not None:
                await self._seams.release([full], token)
            self._local.pop(full, None)

    async def _follow(
        self,
        full: str,
        broadcast: Broadcast,
        produce: Produce,
        assemble: Assemble,
        seconds: float,
        codec: FailureCodec | None,
    ) -> None:
        """Poll another replica's Redis Stream for the local readers, until its end, its leader's death or the
        deadline."""
        key, after = stream_key(full), "0-0"
        checked = started = time.monotonic()
        deadline = deadline_at()
        try:
            while True:
                if broadcast.chunks:
                    deadline = started + self._policy.stream_max_seconds
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeadlineExceededError("the shared stream did not flow before the request's deadline")
                entries = await self._guard.call(partial(_read, key=key, after=after))
                if isinstance(entries, Unavailable):
                    if broadcast.chunks:  # what was relayed cannot be taken back
                        raise CacheUnavailableError("Redis went away while following another replica's stream")
                    # Nothing relayed yet: stream for ourselves, as every replica does while Redis is away.
                    await self._lead(full, broadcast, produce, assemble, seconds, codec, token=None)
                    return
                for entry_id, fields in entries:
                    after = entry_id
                    if b"c" in fields:
                        broadcast.push(fields[b"c"])
                    elif fields.get(b"end") == b"ok":
                        broadcast.finish()
                        return
                    elif b"end" in fields:
                        info = _info(fields.get(b"e"))
                        broadcast.finish(error=codec.decode(info) if codec else CacheUnavailableError(str(info)))
                        return
                if entries:
                    checked = time.monotonic()
                    continue
                if time.monotonic() - checked >= self._policy.lease_ttl / 3:
                    checked = time.monotonic()
                    if await self._leader_gone(full, broadcast, produce, assemble, seconds, codec):
                        return
                await asyncio.sleep(self._policy.stream_poll_interval)
        except Exception as exc:
            broadcast.finish(error=exc)
        finally:
            if self._local.get(full) is not None and broadcast.done:
                self._local.pop(full, None)

    async def _leader_gone(
        self,
        full: str,
        broadcast: Broadcast,
        produce: Produce,
        assemble: Assemble,
        seconds: float,
        codec: FailureCodec | None,
    ) -> bool:
        """While the stream is quiet: is the leader still there? A stored value, a recorded failure or a lapsed
        lease ends the wait (taking over when no chunk was relayed yet)."""
        token = uuid.uuid4().hex
        claim = await self._claim(full, token)
        if isinstance(claim, Unavailable):
            raise CacheUnavailableError("Redis went away while following another replica's stream")
        won = claim[0]
        if await self._settled(full, claim, broadcast, token, codec):
            return True
        if not won:
            return False
        if broadcast.chunks:  # the leader died mid-stream: what was relayed cannot be taken back
            await self._seams.release([full], token)
            broadcast.finish(error=CacheUnavailableError("the replica producing this stream stopped mid-stream"))
            return True
        await self._lead(full, broadcast, produce, assemble, seconds, codec, token=token)  # take over
        return True

    async def _settled(
        self, full: str, claim: Claim, broadcast: Broadcast, token: str, codec: FailureCodec | None
    ) -> bool:
        """Whether a claim found the stream answered already: a stored value (only before any chunk was relayed)
        or a failure recorded moments ago; then `broadcast` is finished and a lease just won is given back."""
        won, data, failed = claim
        found = None if data is None else self._coherent.accept(full, data, self._coherent.generation)
        if found is not None and not broadcast.chunks:
            broadcast.finish(value=found)
        elif failed is not None and codec is not None:
            broadcast.finish(error=codec.decode(_info(failed)))
        else:
            return False
        if won:
            await self._seams.release([full], token)
        return True

    async def _claim(self, full: str, token: str) -> Claim | Unavailable:
        claims = await self._seams.claim([full], token)
        return claims if isinstance(claims, Unavailable) else claims[0]

    async def _append(self, key: str, fields: dict[str, bytes], *, first: bool = False) -> None:
        with contextlib.suppress(CacheUnavailableError):
            await self._guard.call(lambda r: r.stream_add(key, fields, maxlen=_MAXLEN, ttl=_STREAM_TTL, first=first))

    def _loop_deadline(self) -> float | None:
        at = deadline_at()
        return None if at is None else self._loop.time() + (at - time.monotonic())


def _read(tier: RedisTier, *, key: str, after: str) -> Awaitable[list[tuple[str, dict[bytes, bytes]]]]:
    return tier.stream_read(key, after, 256)


def _info(data: bytes | None) -> dict[str, Any]:
    try:
        info = orjson.loads(data or b"{}")
    except orjson.JSONDecodeError:
        info = {}
    return info if isinstance(info, dict) else {}
