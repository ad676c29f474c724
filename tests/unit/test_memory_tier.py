"""The memory tier's bounds: entries, bytes and TTL."""

from __future__ import annotations

import time

import pytest
from rag_api.cache import MemoryTier
from rag_api.cache._memory import ENTRY_OVERHEAD


def test_least_recently_used_goes_first_when_full() -> None:
    """At the entry bound, the least recently used entry is evicted and counted."""
    tier = MemoryTier(max_entries=2, max_bytes=10**6)
    tier.set_nowait("a", b"1", 60)
    tier.set_nowait("b", b"2", 60)
    assert tier.get_nowait("a") == b"1"  # a is now the most recent
    tier.set_nowait("c", b"3", 60)
    assert tier.get_nowait("b") is None
    assert tier.get_nowait("a") == b"1"
    assert tier.evictions == 1


def test_byte_bound_evicts_until_it_fits() -> None:
    """At the byte bound, old entries go until the new one fits; bytes_used stays within the bound."""
    entry = 1 + 1000 + ENTRY_OVERHEAD
    tier = MemoryTier(max_entries=100, max_bytes=3 * entry)
    for key in "abcde":
        tier.set_nowait(key, b"x" * 1000, 60)
    assert len(tier) == 3
    assert tier.bytes_used <= tier.max_bytes
    assert tier.get_nowait("a") is None
    assert tier.get_nowait("e") is not None


def test_a_value_larger_than_the_bound_is_not_kept() -> None:
    """A single value larger than max_bytes is refused rather than emptying the tier."""
    tier = MemoryTier(max_entries=10, max_bytes=500)
    tier.set_nowait("small", b"s", 60)
    tier.set_nowait("huge", b"x" * 1000, 60)
    assert tier.get_nowait("huge") is None
    assert tier.get_nowait("small") == b"s"


def test_entries_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry is gone once its TTL has passed."""
    now = time.monotonic()
    tier = MemoryTier(max_entries=10, max_bytes=10**6)
    tier.set_nowait("k", b"v", 5)
    monkeypatch.setattr(time, "monotonic", lambda: now + 6)
    assert tier.get_nowait("k") is None
    assert tier.expirations == 1
    assert tier.bytes_used == 0


def test_ttl_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """ttl_max caps every entry's lifetime, which bounds how stale a missed invalidation can leave it."""
    now = time.monotonic()
    tier = MemoryTier(max_entries=10, max_bytes=10**6, ttl_max=2)
    tier.set_nowait("k", b"v", 3600)
    monkeypatch.setattr(time, "monotonic", lambda: now + 3)
    assert tier.get_nowait("k") is None


def test_replacing_keeps_byte_accounting_exact() -> None:
    """Replacing and deleting entries leaves bytes_used at zero when the tier is empty."""
    tier = MemoryTier(max_entries=10, max_bytes=10**6)
    tier.set_nowait("k", b"v" * 10, 60)
    tier.set_nowait("k", b"v" * 99, 60)
    tier.set_nowait("j", b"v", 60)
    assert tier.delete_prefix("k") == 1
    tier.delete_nowait("j")
    assert tier.bytes_used == 0
    assert len(tier) == 0
