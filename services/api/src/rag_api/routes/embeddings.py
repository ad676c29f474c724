"""`POST /v1/embeddings`: OpenAI-compatible, each (model, dimensions, input) cached per school as array('f').

An `array('f')` is stored compactly in Redis and plainly in memory, and turns into either encoding without
parsing: its buffer is exactly what OpenAI's base64 carries, `tolist()` the float form. The base64 answer
is assembled as bytes (base64 never needs JSON escaping), so a vector is encoded once, never re-encoded.
"""

from __future__ import annotations

from array import array
from binascii import b2a_base64
from collections.abc import Sequence
from typing import Annotated, Literal, cast

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from rag_api.caching import CacheField, request_policy, serve
from rag_api.deps import DirectRoute, Services, json_body, tenant_of
from rag_api.monitoring import Costing
from rag_api.request_keys import embedding_key
from rag_api.routes.schema import openai_route
from rag_api.upstream import EmbeddingInput

__all__ = ["EmbeddingsRequest", "cache_keys", "router"]

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
    cache: CacheField = None


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


def cache_keys(body: EmbeddingsRequest, services: Services) -> tuple[list[EmbeddingInput], list[str]]:
    """The request's inputs (validated) and the route key of each, in order."""
    items = _items(body, services)
    return items, [embedding_key(body.model, body.dimensions, it) for it in items]


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


@router.post("/v1/embeddings", **openai_route(EmbeddingsRequest))
async def create_embeddings(request: Request) -> Response:
    """Embed `input`; cached inputs come from the cache, the rest from one upstream call."""
    # A DirectRoute, without FastAPI dependencies or a body parameter: this is the hot path (see rag_api.deps).
    school_id = tenant_of(request)
    body = await json_body(request, EmbeddingsRequest)
    services: Services = request.app.state.services
    policy = request_policy(
        request.headers.get("cache-control"), body.cache, max_ttl=services.settings.embedding_cache_ttl
    )
    items, keys = cache_keys(body, services)
    by_key = dict(zip(keys, items, strict=True))

    async def compute(missing: list[str]) -> list[array[float]]:
        inputs = [by_key[k] for k in missing]
        packed = await services.upstream.embed(body.model, inputs, dimensions=body.dimensions, user=body.user)
        return [_vector(v) for v in packed]

    costing = Costing(services.prices, body.model, lambda key, _: _tokens([by_key[key]]))
    vectors, headers = await serve(
        services.embeddings, policy, school_id, keys, compute, route="embeddings", costing=costing
    )
    encode = base64_body if body.encoding_format == "base64" else float_body
    return Response(encode(vectors, body.model, _tokens(items)), media_type="application/json", headers=headers)
