"""The cache headers of the cached routes: `X-Cache`, `X-Cache-Tier`, `X-Cache-Hits`; and how a failed
upstream call is shared with the replicas waiting for the same answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag_api.cache import Lookup
from rag_api.errors import ApiError, UpstreamError

__all__ = ["BYPASS_HEADERS", "UPSTREAM_FAILURES", "UpstreamFailures", "cache_headers"]


def cache_headers(lookups: Sequence[Lookup]) -> dict[str, str]:
    """HIT when every item was cached, MISS when none, PARTIAL otherwise, STALE when any item is a value past
    its TTL served because the upstream failed; the tier is the slowest one read."""
    hits = [lk for lk in lookups if lk.hit]
    n = len(lookups)
    stale = [lk for lk in lookups if lk.stale]
    if stale:
        tier = "redis" if any(lk.tier == "redis" for lk in stale) else "memory"
        return {"X-Cache": "STALE", "X-Cache-Tier": tier, "X-Cache-Hits": f"{len(hits)}/{n}"}
    if not hits:
        result, tier = "MISS", "none"
    else:
        result = "HIT" if len(hits) == n else "PARTIAL"
        tier = "redis" if any(lk.tier == "redis" for lk in hits) else "memory"
    return {"X-Cache": result, "X-Cache-Tier": tier, "X-Cache-Hits": f"{len(hits)}/{n}"}


BYPASS_HEADERS = {"X-Cache": "BYPASS", "X-Cache-Tier": "none"}


class UpstreamFailures:
    """The cache's FailureCodec for upstream failures: what a waiting replica answers when the replica that
    held the lease failed. Only the model's own failures are shared (5xx, unreachable, timeout, 429)."""

    def encode(self, exc: Exception) -> dict[str, Any] | None:
        if not isinstance(exc, ApiError) or not (exc.status >= 500 or exc.status == 429):
            return None
        return {"status": exc.status, "detail": exc.detail, "code": exc.code, "headers": exc.headers}

    def decode(self, info: dict[str, Any]) -> Exception:
        status = info.get("status")
        headers = info.get("headers")
        return UpstreamError(
            f"{info.get('detail', 'the upstream failed')} "
            "(a failure of this request moments ago, shared by the replica that asked the model)",
            status=status if isinstance(status, int) and 400 <= status < 600 else 502,
            code=str(info.get("code") or "upstream_error"),
            headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else None,
        )


UPSTREAM_FAILURES = UpstreamFailures()
