"""`POST /v1/embeddings`: OpenAI-compatible, each (model, dimensions, input) cached per school as array('f').

An `array('f')` is stored compactly in Redis and plainly in memory, and turns into either encoding without
parsing: its buffer is exactly what OpenAI's base64 carries, `tolist()` the float form. The base64 answer
is assembled as bytes (base64 never needs JSON escaping), so a vector is encoded once, never re-encoded.
"""

from __future__ import annotations

import hashlib
from array import array
from binascii import b2a_base64
from collections.abc import Sequence
from typing import Annotated, Any, Literal, cast

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from rag_api.cache import Lookup
from rag_api.deps import CacheMode, DirectRoute, Services, cache_mode_of, json_body, tenant_of
from rag_api.metrics import CACHE_RESULTS, EMBEDDING_ITEMS, child
from rag_api.routes.headers import BYPASS_HEADERS, UPSTREAM_FAILURES, cache_headers
from rag_api.upstream import EmbeddingInput

__all__ = ["EmbeddingsRequest", "router"]

router = APIRouter(tags=["openai"], route_class=DirectRoute)

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


def base64_body(vectors: Sequence[array[float]], model: str, tokens: int) -> bytes:
    """The response body with base64 vectors, byte for byte what `orjson.dumps` makes of the same object."""
    parts = [b'{"object":"list","data":[']
    for i, vector in enumerate(vectors):
        parts += (b',{"object":"embedding","index":' if i else b'{"object":"embedding","index":', b"%d" % i)
        parts += (b',"embedding":"', b2a_base64(vector, newline=False), b'"}')
    parts += (
        b'],"model":',
        orjson.dumps(model),
        b',"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (tokens, tokens),
    )
    return b"".join(parts)


def float_body(vectors: Sequence[array[float]], model: str, tokens: int) -> bytes:
    """The response body with vectors as JSON numbers."""
    data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})


_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": EmbeddingsRequest.model_json_schema()}},
    }
}


@router.post("/v1/embeddings", openapi_extra=_SCHEMA)
async def create_embeddings(request: Request) -> Response:
    """Embed `input`; cached inputs come from the cache, the rest from one upstream call."""
    # A DirectRoute, without FastAPI dependencies or a body parameter: this is the hot path (see rag_api.deps).
    school_id = tenant_of(request)
    mode = cache_mode_of(request)
    body = await json_body(request, EmbeddingsRequest)
    services: Services = request.app.state.services
    items = _items(body, services)
    model, dims = body.model, body.dimensions
    ttl = services.settings.embedding_cache_ttl
    cache, upstream = services.embeddings, services.upstream

    vectors: list[Any]
    if mode is not CacheMode.NORMAL:
        vectors = [_vector(v) for v in await upstream.embed(model, items, dimensions=dims, user=body.user)]
        services.prices.count(model, "upstream", _tokens(items))
        if mode is CacheMode.NO_CACHE:
            keys = [embedding_key(model, dims, it) for it in items]
            await cache.set_many(dict(zip(keys, vectors, strict=True)), ttl=ttl, school_id=school_id)
        headers = dict(BYPASS_HEADERS)
        child(EMBEDDING_ITEMS, "bypass").inc(len(items))
    else:
        by_key = {embedding_key(model, dims, it): it for it in items}
        keys = [embedding_key(model, dims, it) for it in items] if len(by_key) != len(items) else list(by_key)

        async def compute_many(missing: list[str]) -> list[array[float]]:
            asked = [by_key[k] for k in missing]
            packed = await upstream.embed(model, asked, dimensions=dims, user=body.user)
            services.prices.count(model, "upstream", _tokens(asked))
            return [_vector(v) for v in packed]

        lookups: list[Lookup] = await cache.resolve_many(
            keys, compute_many, ttl=ttl, school_id=school_id, failures=UPSTREAM_FAILURES
        )
        vectors = [lk.value for lk in lookups]
        headers = cache_headers(lookups)
        hits = sum(1 for lk in lookups if lk.hit)
        if hits:
            child(EMBEDDING_ITEMS, "hit").inc(hits)
            saved = items if hits == len(items) else [it for it, lk in zip(items, lookups, strict=True) if lk.hit]
            services.prices.count(model, "cache", _tokens(saved))
        if hits < len(lookups):
            child(EMBEDDING_ITEMS, "miss").inc(len(lookups) - hits)
    child(CACHE_RESULTS, "embeddings", headers["X-Cache"]).inc()

    encode = base64_body if body.encoding_format == "base64" else float_body
    content = encode(vectors, model, _tokens(items))
    return Response(content, media_type="application/json", headers=headers)
