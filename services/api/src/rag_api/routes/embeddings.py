"""`POST /v1/embeddings`: OpenAI-compatible, each (model, dimensions, input) cached per school as array('f').

An `array('f')` is stored compactly in Redis and plainly in memory, and turns into either encoding without
parsing: `tobytes()` is exactly what OpenAI's base64 carries, `tolist()` the float form.
"""

from __future__ import annotations

import base64
import hashlib
from array import array
from typing import Annotated, Any, Literal, cast

import orjson
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from rag_api.cache import Lookup
from rag_api.deps import CacheMode, CacheModeDep, Services, ServicesDep, TenantDep
from rag_api.metrics import CACHE_RESULTS, EMBEDDING_ITEMS
from rag_api.routes.headers import BYPASS_HEADERS, cache_headers
from rag_api.upstream import EmbeddingInput

__all__ = ["EmbeddingsRequest", "router"]

router = APIRouter(tags=["openai"])

Token = Annotated[int, Field(ge=0, lt=2**32)]


class EmbeddingsRequest(BaseModel):
    """The OpenAI embeddings request; fields this API does not use are ignored."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str] | list[Token] | list[list[Token]]
    model: str = Field(min_length=1, max_length=256)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0, le=65_536)
    user: str | None = Field(default=None, max_length=256)


def _items(body: EmbeddingsRequest, services: Services) -> list[EmbeddingInput]:
    raw = body.input
    items: list[EmbeddingInput]
    if isinstance(raw, str):
        items = [raw]
    elif raw and isinstance(raw[0], int):
        items = [raw]  # one tokenised input
    else:
        items = cast(list[EmbeddingInput], list(raw))
    settings = services.settings
    if not items:
        raise HTTPException(400, detail="input must not be empty")
    if len(items) > settings.max_batch_size:
        raise HTTPException(400, detail=f"at most {settings.max_batch_size} inputs per request (MAX_BATCH_SIZE)")
    for i, item in enumerate(items):
        if len(item) == 0:
            raise HTTPException(400, detail=f"input[{i}] must not be empty")
        if len(item) > settings.max_input_chars:
            raise HTTPException(400, detail=f"input[{i}] is longer than {settings.max_input_chars} (MAX_INPUT_CHARS)")
        if isinstance(item, str) and not _is_utf8(item):
            raise HTTPException(400, detail=f"input[{i}] is not valid Unicode (lone surrogate)")
    if not _is_utf8(body.model):
        raise HTTPException(400, detail="model is not valid Unicode (lone surrogate)")
    return items


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def embedding_key(model: str, dimensions: int | None, item: EmbeddingInput) -> str:
    """The cache key part of one input: model and dimensions in clear, the input as a SHA-256 digest."""
    text = item if isinstance(item, str) else "\x00tokens:" + ",".join(map(str, item))
    return f"{model}:{dimensions or 0}:{hashlib.sha256(text.encode()).hexdigest()}"


def _tokens(items: list[EmbeddingInput]) -> int:
    # Cached answers have no upstream usage; this is the usual ~4 characters per token estimate.
    return sum(len(i) if isinstance(i, list) else max(1, len(i) // 4) for i in items)


def _vector(packed: bytes) -> array[float]:
    floats: array[float] = array("f")
    floats.frombytes(packed)
    return floats


def _encode(vector: array[float], fmt: str) -> str | list[float]:
    if fmt == "base64":
        return base64.b64encode(vector.tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/v1/embeddings")
async def create_embeddings(
    body: EmbeddingsRequest, school_id: TenantDep, services: ServicesDep, mode: CacheModeDep
) -> Response:
    """Embed `input`; cached inputs come from the cache, the rest from one upstream call."""
    items = _items(body, services)
    model, dims = body.model, body.dimensions
    ttl = services.settings.embedding_cache_ttl
    cache, upstream = services.embeddings, services.upstream

    if mode is not CacheMode.NORMAL:
        vectors: list[Any] = [_vector(v) for v in await upstream.embed(model, items, dimensions=dims, user=body.user)]
        if mode is CacheMode.NO_CACHE:
            keys = [embedding_key(model, dims, it) for it in items]
            await cache.set_many(dict(zip(keys, vectors, strict=True)), ttl=ttl, school_id=school_id)
        headers = dict(BYPASS_HEADERS)
        EMBEDDING_ITEMS.labels("bypass").inc(len(items))
    else:
        by_key = {embedding_key(model, dims, it): it for it in items}
        keys = [embedding_key(model, dims, it) for it in items] if len(by_key) != len(items) else list(by_key)

        async def compute_many(missing: list[str]) -> list[array[float]]:
            packed = await upstream.embed(model, [by_key[k] for k in missing], dimensions=dims, user=body.user)
            return [_vector(v) for v in packed]

        lookups: list[Lookup] = await cache.resolve_many(keys, compute_many, ttl=ttl, school_id=school_id)
        vectors = [lk.value for lk in lookups]
        headers = cache_headers(lookups)
        hits = sum(1 for lk in lookups if lk.hit)
        EMBEDDING_ITEMS.labels("hit").inc(hits)
        EMBEDDING_ITEMS.labels("miss").inc(len(lookups) - hits)
    CACHE_RESULTS.labels("embeddings", headers["X-Cache"]).inc()

    fmt = body.encoding_format
    tokens = _tokens(items)
    payload = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _encode(v, fmt)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)
