"""The stub's HTTP app: OpenAI-compatible embeddings and chat routes (also under Azure's deployment paths)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from upstream_stub.vectors import chat_answer, embedding_bytes

__all__ = ["StubState", "create_app"]


@dataclass
class StubState:
    """Counters and knobs of one stub process; `/control` changes latency and injects failures."""

    latency_ms: float = 150.0
    dim: int = 1536
    fail_status: int = 0
    retry_after: float = 1.0  # seconds, sent with injected 429s (and 503s) as real model APIs do
    chat_chars: int = 0  # pad chat answers to this many characters (0: as they come)
    stream_chunks: int = 8  # content chunks of a streamed answer
    chunk_delay_ms: float = 0.0  # between streamed chunks (the first waits latency_ms)
    abort_after_chunks: int = 0  # >0: a stream breaks off after this many chunks (no finish, no [DONE])
    chat_streams: int = 0
    embedding_requests: int = 0
    embedding_inputs: int = 0
    chat_requests: int = 0
    started: float = field(default_factory=time.time)

    def counters(self) -> dict[str, int]:
        return {
            "embedding_requests": self.embedding_requests,
            "embedding_inputs": self.embedding_inputs,
            "chat_requests": self.chat_requests,
            "chat_streams": self.chat_streams,
        }


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: str = "float"
    dimensions: int | None = Field(default=None, gt=0, le=8192)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]]
    stream: bool | None = None


class Control(BaseModel):
    latency_ms: float | None = Field(default=None, ge=0)
    fail_status: int | None = Field(default=None, ge=0, le=599)
    retry_after: float | None = Field(default=None, ge=0, le=3600)
    chat_chars: int | None = Field(default=None, ge=0, le=1_000_000)
    stream_chunks: int | None = Field(default=None, ge=1, le=10_000)
    chunk_delay_ms: float | None = Field(default=None, ge=0, le=60_000)
    abort_after_chunks: int | None = Field(default=None, ge=0, le=10_000)


def create_app(state: StubState | None = None) -> FastAPI:
    """An app with its own counters; latency, dimension and chat answer length default to STUB_LATENCY_MS,
    STUB_DIM and STUB_CHAT_CHARS."""
    st = state or StubState(
        latency_ms=float(os.environ.get("STUB_LATENCY_MS", "150")),
        dim=int(os.environ.get("STUB_DIM", "1536")),
        chat_chars=int(os.environ.get("STUB_CHAT_CHARS", "0")),
    )
    app = FastAPI(title="upstream stub", version="1.0")
    app.state.stub = st

    async def behave() -> None:
        if st.latency_ms > 0:
            await asyncio.sleep(st.latency_ms / 1000)
        if st.fail_status:
            headers = {"Retry-After": f"{st.retry_after:g}"} if st.fail_status in (429, 503) else None
            raise HTTPException(st.fail_status, detail="injected failure", headers=headers)

    async def embeddings(body: EmbeddingRequest) -> Response:
        raw = body.input
        texts: list[str] = [raw] if isinstance(raw, str) else [x if isinstance(x, str) else repr(x) for x in raw]
        if isinstance(raw, list) and raw and isinstance(raw[0], int):
            texts = [repr(raw)]  # one tokenised input, not one input per token
        if not texts:
            raise HTTPException(400, detail="input must not be empty")
        if body.encoding_format not in ("float", "base64"):
            raise HTTPException(400, detail="encoding_format must be 'float' or 'base64'")
        st.embedding_requests += 1
        st.embedding_inputs += len(texts)
        await behave()
        dim = body.dimensions or st.dim
        data = []
        for i, text in enumerate(texts):
            packed = embedding_bytes(body.model, text, dim)
            if body.encoding_format == "base64":
                vec: Any = base64.b64encode(packed).decode("ascii")
            else:
                arr = array("f")
                arr.frombytes(packed)
                vec = arr.tolist()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(max(1, len(t) // 4) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def chat(body: ChatRequest) -> Response:
        if body.stream:
            return await chat_stream(body)
        st.chat_requests += 1
        await behave()
        extra = sorted((k, repr(v)) for k, v in (body.model_extra or {}).items())
        content = chat_answer(body.model, body.messages, extra, length=st.chat_chars)
        digest = hashlib.sha256(content.encode()).hexdigest()[:24]
        prompt_tokens = sum(len(str(m.get("content", ""))) // 4 + 1 for m in body.messages)
        completion_tokens = len(content) // 4 + 1
        return JSONResponse(
            {
                "id": f"chatcmpl-{digest}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def chat_stream(body: ChatRequest) -> Response:
        """OpenAI's Server-Sent Events: a role chunk, `stream_chunks` content chunks, a finish chunk, the usage
        chunk when `stream_options.include_usage`, then `data: [DONE]`; the answer is the non-streamed one."""
        st.chat_streams += 1
        await behave()  # the first chunk's delay, or a failure before any chunk
        extras = dict(body.model_extra or {})
        options = extras.pop("stream_options", None) or {}
        extra = sorted((k, repr(v)) for k, v in extras.items())
        content = chat_answer(body.model, body.messages, extra, length=st.chat_chars)
        digest = hashlib.sha256(content.encode()).hexdigest()[:24]
        head = {"id": f"chatcmpl-{digest}", "object": "chat.completion.chunk", "created": int(time.time())}
        head["model"] = body.model
        size = -(-len(content) // st.stream_chunks)
        pieces = [content[i : i + size] for i in range(0, len(content), size)] or [""]
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
        usage = {
            "prompt_tokens": sum(len(str(m.get("content", ""))) // 4 + 1 for m in body.messages),
            "completion_tokens": len(content) // 4 + 1,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        abort_after, delay = st.abort_after_chunks, st.chunk_delay_ms / 1000

        async def events() -> Any:
            for n, delta in enumerate(deltas):
                if abort_after and n >= abort_after:
                    raise ConnectionAbortedError("the stub broke the stream off (abort_after_chunks)")
                if n and delay:
                    await asyncio.sleep(delay)
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
                yield sse({**head, "choices": [choice]})
            yield sse({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
            if isinstance(options, dict) and options.get("include_usage"):
                yield sse({**head, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app.add_api_route("/v1/embeddings", embeddings, methods=["POST"])
    app.add_api_route("/v1/chat/completions", chat, methods=["POST"])
    # Azure OpenAI puts the deployment in the path and api-version in the query; the body is the same.
    app.add_api_route("/openai/deployments/{deployment}/embeddings", embeddings, methods=["POST"])
    app.add_api_route("/openai/deployments/{deployment}/chat/completions", chat, methods=["POST"])

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return st.counters()

    @app.post("/stats/reset")
    async def reset() -> dict[str, int]:
        st.embedding_requests = st.embedding_inputs = st.chat_requests = st.chat_streams = 0
        return st.counters()

    @app.post("/control")
    async def control(body: Control) -> dict[str, float]:
        if body.latency_ms is not None:
            st.latency_ms = body.latency_ms
        if body.fail_status is not None:
            st.fail_status = body.fail_status
        if body.chat_chars is not None:
            st.chat_chars = body.chat_chars
        if body.retry_after is not None:
            st.retry_after = body.retry_after
        for knob in ("stream_chunks", "chunk_delay_ms", "abort_after_chunks"):
            if (value := getattr(body, knob)) is not None:
                setattr(st, knob, value)
        return {
            "latency_ms": st.latency_ms,
            "fail_status": st.fail_status,
            "chat_chars": st.chat_chars,
            "retry_after": st.retry_after,
            "stream_chunks": st.stream_chunks,
            "chunk_delay_ms": st.chunk_delay_ms,
            "abort_after_chunks": st.abort_after_chunks,
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        # OpenAI's error envelope, as the real APIs answer (the SDK reads `error.message`).
        kind = "rate_limit_error" if exc.status_code == 429 else "server_error" if exc.status_code >= 500 else None
        error = {"message": str(exc.detail), "type": kind or "invalid_request_error", "param": None, "code": None}
        return JSONResponse({"error": error}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": f"stub error: {type(exc).__name__}"}, status_code=500)

    return app


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"
