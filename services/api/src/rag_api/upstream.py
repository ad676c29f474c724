"""The model upstream, reached with the official `openai` SDK; its failures become 502/504, never cached."""

from __future__ import annotations

import base64
import logging
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import httpx2
import openai
import orjson

from rag_api.config import Settings
from rag_api.errors import ApiError, UpstreamError, UpstreamTimeoutError
from rag_api.metrics import UPSTREAM_DURATION, UPSTREAM_REQUESTS

__all__ = ["EmbeddingInput", "Upstream"]

log = logging.getLogger("rag_api")

EmbeddingInput = str | list[int]
T = TypeVar("T")

# Client mistakes the upstream reports are the caller's to fix; everything else is our upstream's failure.
_PASS_THROUGH = {400, 404, 413, 422}


class Upstream:
    """One OpenAI-compatible client per worker (built in the lifespan, closed with `aclose`)."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings, http_client: httpx2.AsyncClient | None = None) -> Upstream:
        """`AsyncAzureOpenAI` when AZURE_OPENAI_API_VERSION is set, else `AsyncOpenAI`, at UPSTREAM_BASE_URL."""
        timeout = httpx2.Timeout(settings.upstream_timeout, connect=min(5.0, settings.upstream_timeout))
        key = settings.upstream_api_key.get_secret_value()
        client: openai.AsyncOpenAI
        if settings.azure_openai_api_version:
            client = openai.AsyncAzureOpenAI(
                azure_endpoint=settings.upstream_base_url,
                api_version=settings.azure_openai_api_version,
                api_key=key,
                timeout=timeout,
                max_retries=settings.upstream_max_retries,
                http_client=http_client,
            )
        else:
            client = openai.AsyncOpenAI(
                base_url=settings.upstream_base_url,
                api_key=key,
                timeout=timeout,
                max_retries=settings.upstream_max_retries,
                http_client=http_client,
            )
        return cls(client)

    async def aclose(self) -> None:
        await self.client.close()

    async def embed(
        self, model: str, inputs: list[EmbeddingInput], *, dimensions: int | None, user: str | None
    ) -> list[bytes]:
        """Little-endian float32 bytes per input, in order, from one upstream call."""
        kwargs: dict[str, Any] = {}
        if dimensions is not None:
            kwargs["dimensions"] = dimensions
        if user is not None:
            kwargs["user"] = user
        payload: Any = inputs[0] if len(inputs) == 1 and isinstance(inputs[0], str) else inputs
        raw = await self._call(
            "embeddings",
            lambda: self.client.embeddings.with_raw_response.create(
                model=model, input=payload, encoding_format="base64", **kwargs
            ),
        )
        return _vectors(raw.content, len(inputs))

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """The upstream's chat completion as a JSON object; `body` is the request less `model` and `messages`."""
        rest = dict(body)
        model, messages = rest.pop("model"), rest.pop("messages")
        raw = await self._call(
            "chat",
            lambda: self.client.chat.completions.with_raw_response.create(
                model=model, messages=cast(Any, messages), extra_body=rest or None
            ),
        )
        try:
            parsed = orjson.loads(raw.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("the upstream answered chat with invalid JSON") from exc
        if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
            raise UpstreamError("the upstream's chat answer has no 'choices'")
        return parsed

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await call()
            outcome = "ok"
            return result
        except openai.APITimeoutError as exc:
            outcome = "timeout"
            raise UpstreamTimeoutError(f"the upstream did not answer {operation} in time") from exc
        except openai.APIConnectionError as exc:
            raise UpstreamError(f"the upstream could not be reached for {operation}: {exc}") from exc
        except openai.APIStatusError as exc:
            detail = _upstream_detail(exc)
            if exc.status_code in _PASS_THROUGH:
                raise ApiError(f"the upstream rejected the request: {detail}", status=exc.status_code) from exc
            raise UpstreamError(f"the upstream answered {operation} with {exc.status_code}: {detail}") from exc
        except openai.OpenAIError as exc:
            raise UpstreamError(f"the upstream call for {operation} failed: {exc}") from exc
        except (ValueError, TypeError) as exc:
            # Raised while encoding the request body: the input slipped past validation, so it is the caller's.
            raise ApiError(f"the request cannot be sent upstream: {exc}", status=400) from exc
        finally:
            UPSTREAM_REQUESTS.labels(operation, outcome).inc()
            UPSTREAM_DURATION.labels(operation).observe(time.perf_counter() - started)


def _upstream_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") or inner.get("detail") if isinstance(inner, dict) else None
        if message is None and isinstance(body.get("detail"), str):
            message = body["detail"]
        if message:
            return str(message)[:500]
    return str(exc.message)[:500]


def _vectors(content: bytes, expected: int) -> list[bytes]:
    try:
        parsed = orjson.loads(content)
        data = sorted(parsed["data"], key=lambda item: item["index"])
        if len(data) != expected:
            raise UpstreamError(f"the upstream returned {len(data)} embeddings for {expected} inputs")
        return [_packed(item["embedding"]) for item in data]
    except UpstreamError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UpstreamError("the upstream's embeddings answer is malformed") from exc


def _packed(embedding: object) -> bytes:
    if isinstance(embedding, str):
        raw = base64.b64decode(embedding, validate=True)
        if len(raw) % 4:
            raise ValueError("base64 embedding is not a whole number of float32 values")
        return raw
    if isinstance(embedding, list):
        # An upstream that ignores encoding_format sends floats: pack them as OpenAI's base64 would.
        return array("f", embedding).tobytes()
    raise TypeError("embedding is neither base64 nor a list of floats")
