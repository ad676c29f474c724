"""The cache policy of one request, in one place (STYLE rule 18): every cached route calls `request_policy`
and `serve`, and says only what it serves.

A request controls its caching with the `Cache-Control` header (`no-cache`, `no-store`, `max-age=N`) and a
`cache` object in its body, as the OpenAI SDKs send it with `extra_body` (LiteLLM's names: `no-cache`,
`no-store`, `ttl`, `s-maxage`, `namespace`). Unknown directives are a 400; so are two different TTLs. A TTL
is bounded by the cache's configured TTL, and 0 stores nothing (as `no-store`). The namespace partitions the
school's entries (see `rag_api.request_keys.namespaced`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from rag_api.cache import CacheManager, Lookup
from rag_api.errors import ApiError
from rag_api.metrics import CACHE_RESULTS, EMBEDDING_ITEMS, child
from rag_api.monitoring import Costing
from rag_api.request_keys import namespaced
from rag_api.routes.headers import BYPASS_HEADERS, UPSTREAM_FAILURES, cache_headers

__all__ = ["CacheField", "CacheMode", "CacheOptions", "RequestPolicy", "namespace_of", "request_policy", "serve"]

Seconds = Annotated[float, Field(ge=0, le=10 * 365 * 24 * 3600, allow_inf_nan=False)]


class CacheMode(Enum):
    """What the request allows: read and write, write only (no-cache), neither (no-store)."""

    NORMAL = "normal"
    NO_CACHE = "no-cache"
    NO_STORE = "no-store"


class CacheOptions(BaseModel):
    """The body's `cache` object (what `extra_body={"cache": {...}}` sends); never forwarded to the model."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, title="CacheOptions")

    no_cache: bool = Field(default=False, alias="no-cache", description="skip the cache read; store the answer")
    no_store: bool = Field(default=False, alias="no-store", description="neither read nor store")
    ttl: Seconds | None = Field(default=None, description="this entry's TTL in seconds (bounded; 0: not stored)")
    s_maxage: Seconds | None = Field(default=None, alias="s-maxage", description="the same as ttl")
    namespace: str | None = Field(
        default=None, min_length=1, max_length=256, description="a partition of the school's entries"
    )


# The request models' `cache` field: kept as parsed, so that `request_policy` answers a bad directive with a 400
# like a bad header, and documented in the schema as CacheOptions.
CacheField = Annotated[
    Any,
    WithJsonSchema({"anyOf": [CacheOptions.model_json_schema(), {"type": "null"}]}, mode="validation"),
]


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """One request's caching: what it may read and write, each entry's TTL, and its namespace."""

    mode: CacheMode
    ttl: float
    namespace: str | None = None

    def key(self, route_key: str) -> str:
        return namespaced(self.namespace, route_key)


def _bad(detail: str) -> ApiError:
    return ApiError(detail, status=400, code="invalid_cache_directive")


def _header_directives(raw: str) -> tuple[set[str], list[float]]:
    flags: set[str] = set()
    ttls: list[float] = []
    for part in raw.split(","):
        name, eq, value = part.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if name in ("no-cache", "no-store") and not eq:
            flags.add(name)
        elif name == "max-age" and value.strip().isascii() and value.strip().isdigit():
            ttls.append(float(value.strip()))
        else:
            raise _bad(f"unsupported Cache-Control directive {part.strip()[:64]!r} (no-cache, no-store, max-age=N)")
    return flags, ttls


def _body_options(raw: Any) -> CacheOptions:
    if isinstance(raw, CacheOptions):
        return raw
    try:
        return CacheOptions.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _bad(f"cache{'.' + where if where else ''}: {first['msg']} (see CacheOptions in the schema)") from None


def namespace_of(body_cache: Any) -> str | None:
    """The namespace a body's `cache` object names (None: absent), its other directives checked too."""
    return None if body_cache is None else _body_options(body_cache).namespace


def request_policy(
    cache_control: str | None, body_cache: Any, *, max_ttl: float, bypass: bool = False
) -> RequestPolicy:
    """The policy of a request from its `Cache-Control` header and its body's `cache` object (None: absent);
    `bypass` (the route's own reason, e.g. a sampled completion that must not be cached) means no-store."""
    flags, ttls = _header_directives(cache_control) if cache_control else (set(), [])
    namespace = None
    if body_cache is not None:
        options = _body_options(body_cache)
        flags |= {name for name, on in (("no-cache", options.no_cache), ("no-store", options.no_store)) if on}
        ttls += [t for t in (options.ttl, options.s_maxage) if t is not None]
        namespace = options.namespace
    if len(set(ttls)) > 1:
        raise _bad("conflicting TTLs (max-age, cache.ttl, cache.s-maxage): give one")
    ttl = min(ttls[0], max_ttl) if ttls else max_ttl
    if bypass or "no-store" in flags or ttl == 0:
        mode = CacheMode.NO_STORE
    elif "no-cache" in flags:
        mode = CacheMode.NO_CACHE
    else:
        mode = CacheMode.NORMAL
    return RequestPolicy(mode, ttl, namespace)


async def serve(
    cache: CacheManager,
    policy: RequestPolicy,
    school_id: int,
    keys: Sequence[str],
    compute: Callable[[list[str]], Awaitable[Sequence[Any]]],
    *,
    route: str,
    costing: Costing | None = None,
) -> tuple[list[Any], dict[str, str]]:
    """The value of every route key, and the answer's cache headers. `compute(route_keys)` returns the values
    of the keys nobody has, in order; with no-cache/no-store it gets every distinct key and nothing is read.
    Counts the answer in `rag_cache_results_total` (and embedding items in `rag_embedding_items_total`), and
    with `costing` the tokens the model served and the cache saved (`rag_model_tokens_total`)."""
    if policy.mode is not CacheMode.NORMAL:
        unique = list(dict.fromkeys(keys))
        computed = dict(zip(unique, await compute(unique), strict=True))
        if costing is not None:
            costing.count("upstream", computed.items())
        if policy.mode is CacheMode.NO_CACHE:
            stored = {policy.key(k): v for k, v in computed.items()}
            await cache.set_many(stored, ttl=policy.ttl, school_id=school_id)
        _count(route, "BYPASS", bypass=len(keys))
        return [computed[k] for k in keys], dict(BYPASS_HEADERS)

    fulls = [policy.key(k) for k in keys] if policy.namespace else list(keys)
    route_key = dict(zip(fulls, keys, strict=True))

    async def compute_missing(missing: list[str]) -> Sequence[Any]:
        asked = [route_key[m] for m in missing]
        values = await compute(asked)
        if costing is not None:
            costing.count("upstream", zip(asked, values, strict=False))
        return values

    lookups: list[Lookup] = await cache.resolve_many(
        fulls, compute_missing, ttl=policy.ttl, school_id=school_id, failures=UPSTREAM_FAILURES
    )
    headers = cache_headers(lookups)
    hits = sum(1 for lk in lookups if lk.hit)
    _count(route, headers["X-Cache"], hit=hits, miss=len(lookups) - hits)
    if costing is not None and hits:
        costing.count("cache", ((k, lk.value) for k, lk in zip(keys, lookups, strict=True) if lk.hit))
    return [lk.value for lk in lookups], headers


def _count(route: str, result: str, **items: int) -> None:
    child(CACHE_RESULTS, route, result).inc()
    if route == "embeddings":
        for outcome, n in items.items():
            if n:
                child(EMBEDDING_ITEMS, outcome).inc(n)
