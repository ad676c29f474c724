"""The cache headers of the cached routes: `X-Cache`, `X-Cache-Tier`, `X-Cache-Hits`."""

from __future__ import annotations

from collections.abc import Sequence

from rag_api.cache import Lookup

__all__ = ["BYPASS_HEADERS", "cache_headers"]


def cache_headers(lookups: Sequence[Lookup]) -> dict[str, str]:
    """HIT when every item was cached, MISS when none, PARTIAL otherwise; the tier is the slowest one read."""
    hits = [lk for lk in lookups if lk.hit]
    n = len(lookups)
    if not hits:
        result, tier = "MISS", "none"
    else:
        result = "HIT" if len(hits) == n else "PARTIAL"
        tier = "redis" if any(lk.tier == "redis" for lk in hits) else "memory"
    return {"X-Cache": result, "X-Cache-Tier": tier, "X-Cache-Hits": f"{len(hits)}/{n}"}


BYPASS_HEADERS = {"X-Cache": "BYPASS", "X-Cache-Tier": "none"}
