"""The memory tier: a per-process LRU with per-entry TTL, bounded by entry count and by bytes, and fair
between schools: no school holds more than `tenant_share` of either bound (CACHE_TENANT_MAX_SHARE), so a
school that floods unique inputs evicts its own oldest entries, not another school's hot ones.

It keeps any object (the manager keeps `Stored` values, handed out without a copy); a value's weight is
the `size` given with it, or `len()` of bytes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

# What one entry costs besides its key and value bytes (dict slots, tuple, float, headers), roughly.
ENTRY_OVERHEAD = 160


def tenant_of(key: str) -> str:
    """The school of a full key `cache:{name}:school:{id}:...` ('' for any other key)."""
    parts = key.split(":", 4)
    return parts[3] if len(parts) == 5 and parts[0] == "cache" and parts[2] == "school" else ""


class MemoryTier:
    """Thread-safe, O(1) get and set; the least recently used entries go first when a bound is reached."""

    def __init__(
        self, *, max_entries: int, max_bytes: int, ttl_max: float | None = None, tenant_share: float = 1.0
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_max = ttl_max
        self.tenant_share = tenant_share
        self.evictions = 0
        self.tenant_evictions = 0
        self.expirations = 0
        # key -> (value, expires at on the monotonic clock, weight, tenant)
        self._data: OrderedDict[str, tuple[Any, float, int, str]] = OrderedDict()
        self._tenants: dict[str, OrderedDict[str, None]] = {}
        self._tenant_bytes: dict[str, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def tenant_figures(self) -> dict[str, dict[str, int]]:
        """Entries and bytes per school, for stats."""
        with self._lock:
            return {t: {"entries": len(k), "bytes": self._tenant_bytes.get(t, 0)} for t, k in self._tenants.items()}

    def get_nowait(self, key: str) -> Any:
        # No lock on the hit path (a third of its cost): each step is one atomic dict operation under the GIL,
        # and a key removed meanwhile by another thread reads as a miss. Writers hold the lock.
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            with self._lock:
                if self._data.get(key) is item:
                    self._remove(key, item)
                    self.expirations += 1
            return None
        try:
            self._data.move_to_end(key)
            self._tenants[item[3]].move_to_end(key)
        except KeyError:
            return None
        return item[0]

    def set_nowait(self, key: str, value: Any, ttl: float, size: int | None = None) -> None:
        if self.ttl_max is not None:
            ttl = min(ttl, self.ttl_max)
        weight = len(key) + (len(value) if size is None else size) + ENTRY_OVERHEAD
        if ttl <= 0 or weight > self.max_bytes * self.tenant_share:
            self.delete_nowait(key)
            return
        tenant = tenant_of(key)
        with self._lock:
            old = self._data.get(key)
            if old is not None:
                self._remove(key, old)
            self._data[key] = (value, time.monotonic() + ttl, weight, tenant)
            self._tenants.setdefault(tenant, OrderedDict())[key] = None
            self._tenant_bytes[tenant] = self._tenant_bytes.get(tenant, 0) + weight
            self._bytes += weight
            self._evict(tenant)

    def delete_nowait(self, key: str) -> bool:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return False
            self._remove(key, item)
            return True

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with `prefix`; O(n), as clearing a tenant is rare."""
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for key in doomed:
                self._remove(key, self._data[key])
            return len(doomed)

    def clear_nowait(self) -> int:
        with self._lock:
            count = len(self._data)
            self._data.clear()
            self._tenants.clear()
            self._tenant_bytes.clear()
            self._bytes = 0
            return count

    def _evict(self, tenant: str) -> None:
        """Bring `tenant` within its share, then the whole tier within its bounds (lock held)."""
        keys = self._tenants[tenant]
        share_entries, share_bytes = self.max_entries * self.tenant_share, self.max_bytes * self.tenant_share
        # popitem, not next(iter()): readers reorder without the lock, and an iterator would see them.
        while keys and (len(keys) > share_entries or self._tenant_bytes[tenant] > share_bytes):
            oldest, _ = keys.popitem(last=False)
            self._remove(oldest, self._data[oldest])
            self.evictions += 1
            self.tenant_evictions += 1
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            oldest, item = self._data.popitem(last=False)
            self._remove(oldest, item)
            self.evictions += 1

    def _remove(self, key: str, item: tuple[Any, float, int, str]) -> None:
        """Forget `key` and its figures (it may already be out of one of the two orders)."""
        self._data.pop(key, None)
        tenant, weight = item[3], item[2]
        keys = self._tenants[tenant]
        keys.pop(key, None)
        if keys:
            self._tenant_bytes[tenant] -= weight
        else:
            del self._tenants[tenant]
            del self._tenant_bytes[tenant]
        self._bytes -= weight

    # The tier interface shared with RedisTier (see _tier.py); these never block.
    async def get(self, key: str) -> bytes | None:
        value = self.get_nowait(key)
        return value if isinstance(value, bytes) or value is None else None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(k) for k in keys]

    async def set(self, key: str, data: bytes, ttl: float) -> None:
        self.set_nowait(key, data, ttl)

    async def set_many(self, items: Mapping[str, bytes], ttl: float) -> None:
        for key, data in items.items():
            self.set_nowait(key, data, ttl)

    async def delete(self, keys: Sequence[str]) -> int:
        return sum(self.delete_nowait(k) for k in keys)

    async def clear(self, prefix: str) -> int:
        return self.delete_prefix(prefix)
