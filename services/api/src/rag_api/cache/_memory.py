"""The memory tier: a per-process LRU with per-entry TTL, bounded by entry count and by bytes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

# What one entry costs besides its key and value bytes (dict slot, tuple, float, bytes headers), roughly.
ENTRY_OVERHEAD = 120


class MemoryTier:
    """Thread-safe, O(1) get and set; the least recently used entries go first when a bound is reached."""

    def __init__(self, *, max_entries: int, max_bytes: int, ttl_max: float | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_max = ttl_max
        self.evictions = 0
        self.expirations = 0
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get_nowait(self, key: str) -> bytes | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[1] <= time.monotonic():
                self._remove(key, item[0])
                self.expirations += 1
                return None
            self._data.move_to_end(key)
            return item[0]

    def set_nowait(self, key: str, data: bytes, ttl: float) -> None:
        if self.ttl_max is not None:
            ttl = min(ttl, self.ttl_max)
        size = len(key) + len(data) + ENTRY_OVERHEAD
        if ttl <= 0 or size > self.max_bytes:
            self.delete_nowait(key)
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= len(key) + len(old[0]) + ENTRY_OVERHEAD
            self._data[key] = (data, time.monotonic() + ttl)
            self._bytes += size
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                evicted, (evicted_data, _) = self._data.popitem(last=False)
                self._bytes -= len(evicted) + len(evicted_data) + ENTRY_OVERHEAD
                self.evictions += 1

    def delete_nowait(self, key: str) -> bool:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return False
            self._remove(key, item[0])
            return True

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with `prefix`; O(n), as clearing a tenant is rare."""
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for key in doomed:
                self._remove(key, self._data[key][0])
            return len(doomed)

    def clear_nowait(self) -> int:
        with self._lock:
            count = len(self._data)
            self._data.clear()
            self._bytes = 0
            return count

    def _remove(self, key: str, data: bytes) -> None:
        del self._data[key]
        self._bytes -= len(key) + len(data) + ENTRY_OVERHEAD

    # The tier interface shared with RedisTier (see _tier.py); these never block.
    async def get(self, key: str) -> bytes | None:
        return self.get_nowait(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.get_nowait(k) for k in keys]

    async def set(self, key: str, data: bytes, ttl: float) -> None:
        self.set_nowait(key, data, ttl)

    async def set_many(self, items: Mapping[str, bytes], ttl: float) -> None:
        for key, data in items.items():
            self.set_nowait(key, data, ttl)

    async def delete(self, keys: Sequence[str]) -> int:
        return sum(self.delete_nowait(k) for k in keys)

    async def clear(self, prefix: str) -> int:
        return self.delete_prefix(prefix)
