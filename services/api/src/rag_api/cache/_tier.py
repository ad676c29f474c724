"""The one small interface every cache tier implements; the manager composes tiers and never subclasses them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class CacheTier(Protocol):
    """Bytes in, bytes out; keys are full tenant keys; TTLs in seconds; a missing key reads as None."""

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set(self, key: str, data: bytes, ttl: float) -> None: ...

    async def set_many(self, items: Mapping[str, bytes], ttl: float) -> None: ...

    async def delete(self, keys: Sequence[str]) -> int: ...

    async def clear(self, prefix: str) -> int:
        """Remove every key starting with `prefix`; returns how many were removed."""
        ...
