"""The model upstream, reached with the official `openai` SDK.

Its failures are never cached and map the way OpenAI clients expect: 429 stays 429 with its Retry-After,
other 4xx keep their status and message, 5xx and no connection are 502, a timeout is 504. Every call gets
what is left of the request's deadline (at most UPSTREAM_TIMEOUT), and passes its model's circuit breaker.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import httpx2
import openai
import orjson

from rag_api.access_log import add_upstream_time
from rag_api.cache import remaining
from rag_api.config import Settings
from rag_api.errors import ApiError, UpstreamError, UpstreamRejectedError, UpstreamTimeoutError
from rag_api.metrics import UPSTREAM_BREAKER, UPSTREAM_DURATION, UPSTREAM_REQUESTS
from rag_api.model_breaker import STATE_VALUES, ModelBreakers

__all__ = ["EmbeddingInput", "Upstream"]

log = logging.getLogger("rag_api")

EmbeddingInput = str | list[int]
T = TypeVar("T")

# Below this many seconds left in the request's budget, an upstream call is not worth starting.
_MIN_CALL_SECONDS = 0.05
# The headers of a model's refusal that tell the client when to come back.
_RETRY_HEADERS = ("retry-after", "retry-after-ms", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")


class Upstream:
    """One OpenAI-compatible client per worker (built in the lifespan, closed with `aclose`)."""

    def __init__(
        self, client: openai.AsyncOpenAI, *, timeout: float = 30.0, breakers: ModelBreakers | None = None
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.breakers = breakers or ModelBreakers(threshold=0, cooldown=0.0)

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
        breakers = ModelBreakers(settings.upstream_breaker_threshold, settings.upstream_breaker_cooldown)
        return cls(client, timeout=settings.upstream_timeout, breakers=breakers)

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
            model,
            lambda timeout: self.client.embeddings.with_raw_response.create(
                model=model, input=payload, encoding_format="base64", timeout=timeout, **kwargs
            ),
        )
        return _vectors(raw.content, len(inputs))

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """The upstream's chat completion as a JSON object; `body` is the request less `model` and `messages`."""
        rest = dict(body)
        model, messages = rest.pop("model"), rest.pop("messages")
        raw = await self._call(
            "chat",
            model,
            lambda timeout: self.client.chat.completions.with_raw_response.create(
                model=model, messages=cast(Any, messages), extra_body=rest or None, timeout=timeout
            ),
        )
        try:
            parsed = orjson.loads(raw.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("the upstream answered chat with invalid JSON") from exc
        if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
            raise UpstreamError("the upstream's chat answer has no 'choices'")
        return parsed

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The upstream's streamed chat completion, chunk by chunk as JSON objects, usage included (the cache
        stores it; the route drops it for clients that did not ask). A stream that breaks off raises."""
        rest = dict(body)
        model, messages = rest.pop("model"), rest.pop("messages")
        rest.pop("stream", None)
        rest.pop("stream_options", None)
        stream = await self._call(
            "chat_stream",
            model,
            lambda timeout: self.client.chat.completions.create(
                model=model,
                messages=cast(Any, messages),
                stream=True,
                stream_options={"include_usage": True},
                extra_body=rest or None,
                timeout=timeout,
            ),
        )
        try:
            async for chunk in stream:
                yield chunk.to_dict(mode="json", exclude_unset=True)
        except openai.APITimeoutError as exc:
            raise UpstreamTimeoutError("the upstream stream stalled longer than UPSTREAM_TIMEOUT") from exc
        except (openai.APIError, httpx2.HTTPError, OSError) as exc:
            raise UpstreamError(f"the upstream stream broke off: {exc}", code="upstream_stream_broken") from exc
        finally:
            await stream.close()

    async def _call(self, operation: str, model: str, call: Callable[[httpx2.Timeout], Awaitable[T]]) -> T:
        breaker = self.breakers.get(model)
        if breaker is not None:
            try:
                breaker.before_call()
            except ApiError:
                UPSTREAM_REQUESTS.labels(operation, "circuit_open").inc()
                raise
        left = min(self.timeout, remaining(self.timeout))
        if left < _MIN_CALL_SECONDS:
            UPSTREAM_REQUESTS.labels(operation, "no_time_left").inc()
            if breaker is not None:
                breaker.abandon()
            raise UpstreamTimeoutError(f"no time left in the request's budget to call the upstream for {operation}")
        started = time.perf_counter()
        outcome = "error"
        error: ApiError | None = None
        try:
            result = await call(httpx2.Timeout(left, connect=min(5.0, left)))
            outcome = "ok"
            return result
        except Exception as exc:
            error = _mapped(operation, exc)
            outcome = _OUTCOMES.get(error.status, "error")
            raise error from exc
        finally:
            if breaker is not None:
                if outcome == "error" and error is None:  # cancelled: no outcome to learn from
                    breaker.abandon()
                else:
                    breaker.record(error if _counts_as_failure(error) else None)
                if breaker.times_opened:  # a series only for models that failed: clients choose model names
                    UPSTREAM_BREAKER.labels(model).set(STATE_VALUES[breaker.state])
            elapsed = time.perf_counter() - started
            UPSTREAM_REQUESTS.labels(operation, outcome).inc()
            UPSTREAM_DURATION.labels(operation).observe(elapsed)
            add_upstream_time(elapsed)


_OUTCOMES = {429: "rate_limited", 502: "error", 504: "timeout"}


def _counts_as_failure(error: ApiError | None) -> bool:
    """The failures that say the model is in trouble: 5xx, no connection, timeouts, rate limiting."""
    return error is not None and (error.status >= 500 or error.status == 429)


def _mapped(operation: str, exc: Exception) -> ApiError:
    """The API's error for an exception of the SDK (or of encoding the request)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeoutError(f"the upstream did not answer {operation} in time")
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError(f"the upstream could not be reached for {operation}: {exc}", code="upstream_unreachable")
    if isinstance(exc, openai.APIStatusError):
        detail = _upstream_detail(exc)
        status = exc.status_code
        if 400 <= status < 500:
            headers = {h.title(): v for h in _RETRY_HEADERS if (v := exc.response.headers.get(h)) is not None}
            if status == 429 and "Retry-After" not in headers:
                headers["Retry-After"] = _retry_after_from_ms(headers.get("Retry-After-Ms"))
            code = "rate_limit_exceeded" if status == 429 else _upstream_code(exc) or "upstream_rejected"
            return UpstreamRejectedError(
                f"the upstream refused {operation} ({status}): {detail}", status=status, code=code, headers=headers
            )
        return UpstreamError(f"the upstream answered {operation} with {status}: {detail}")
    if isinstance(exc, openai.OpenAIError):
        return UpstreamError(f"the upstream call for {operation} failed: {exc}")
    if isinstance(exc, ValueError | TypeError):
        # Raised while encoding the request body: the input slipped past validation, so it is the caller's.
        return ApiError(f"the request cannot be sent upstream: {exc}", status=400, code="invalid_request")
    raise exc


def _retry_after_from_ms(value: str | None) -> str:
    try:
        return str(max(1, math.ceil(float(value or "1000") / 1000)))
    except ValueError:
        return "1"


def _upstream_code(exc: openai.APIStatusError) -> str | None:
    code = getattr(exc, "code", None)
    return str(code)[:64] if code else None


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
