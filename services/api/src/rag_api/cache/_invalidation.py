"""Cross-replica coherence: every write is announced on a Redis pub/sub channel, and every other process drops
the named entries from its memory tier.

Why pub/sub with sender ids rather than server-assisted client tracking: it behaves the same under RESP2 and
RESP3, needs no per-connection redirect plumbing in redis-py's pool, announces a whole tenant clear as one
prefix message (tracking would need BCAST prefixes per tenant), and the announcement rides in the same
pipeline as the write, so it costs no extra round trip. Pub/sub is fire-and-forget, so a process that lost
its subscription cannot know what it missed: the manager stops trusting its memory tier from the moment the
subscription drops until it is back, and drops the memory tier when it resubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ._errors import CacheBackendError
from ._redis import RedisTier, SyncRedisTier, translate_errors

log = logging.getLogger("rag_api.cache")


@dataclass(frozen=True, slots=True)
class Notice:
    """What one write changed: full keys (set or delete), or everything under a prefix (clear)."""

    sender: str
    keys: tuple[str, ...] = ()
    prefix: str | None = None

    def encode(self) -> bytes:
        body: dict[str, object] = {"s": self.sender}
        if self.keys:
            body["k"] = list(self.keys)
        if self.prefix is not None:
            body["p"] = self.prefix
        return orjson.dumps(body)

    @classmethod
    def decode(cls, data: bytes) -> Notice | None:
        try:
            body = orjson.loads(data)
            keys = body.get("k", [])
            prefix = body.get("p")
            if not isinstance(body["s"], str) or not all(isinstance(k, str) for k in keys):
                return None
            if prefix is not None and not isinstance(prefix, str):
                return None
            return cls(body["s"], tuple(keys), prefix)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None


@dataclass(frozen=True, slots=True)
class Subscriber:
    """What a listener reports to its manager: a subscription made, a peer's notice, the subscription lost."""

    sender: str
    on_notice: Callable[[Notice], None]
    on_subscribed: Callable[[], None]
    on_lost: Callable[[], None]

    def handle(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":
            self.on_subscribed()
        elif message["type"] == "message":
            notice = Notice.decode(message["data"])
            if notice is not None and notice.sender != self.sender:  # our own writes are already applied
                self.on_notice(notice)


class InvalidationListener:
    """Keeps one subscription to the channel alive, reconnecting every `reconnect_interval` while Redis is away."""

    def __init__(self, tier: RedisTier, subscriber: Subscriber, *, reconnect_interval: float) -> None:
        self._tier = tier
        self._subscriber = subscriber
        self._interval = reconnect_interval

    async def run(self) -> None:
        while True:
            try:
                await self._listen_once()
            except CacheBackendError as exc:
                log.debug("invalidation subscription lost: %s", exc)
            finally:
                self._subscriber.on_lost()
            await asyncio.sleep(self._interval)

    async def _listen_once(self) -> None:
        pubsub, close = await self._tier.open_pubsub()
        task = asyncio.current_task()
        try:
            with translate_errors():
                await pubsub.subscribe(self._tier.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    # redis-py's read timeout can swallow a cancellation that lands while it waits; honour it.
                    if task is not None and task.cancelling():
                        raise asyncio.CancelledError
                    if message is not None:
                        self._subscriber.handle(message)
        finally:
            with contextlib.suppress(CacheBackendError):  # the connection is already gone; nothing left to close
                await close()


class ThreadedInvalidationListener:
    """The sync twin of InvalidationListener, for processes that never run an event loop: a daemon thread
    keeps the subscription, so `get_sync` may serve from memory with no Redis call."""

    def __init__(self, tier: SyncRedisTier, subscriber: Subscriber, *, reconnect_interval: float) -> None:
        self._tier = tier
        self._subscriber = subscriber
        self._interval = reconnect_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-invalidations-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen_once()
            except CacheBackendError as exc:
                log.debug("sync invalidation subscription lost: %s", exc)
            finally:
                self._subscriber.on_lost()
            self._stop.wait(self._interval)

    def _listen_once(self) -> None:
        client = self._tier.pubsub_client()
        pubsub: Any = client.pubsub()
        try:
            with translate_errors():
                pubsub.subscribe(self._tier.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._subscriber.handle(message)
        finally:
            try:
                with translate_errors():
                    pubsub.close()
                    client.close()
            except CacheBackendError:
                pass
