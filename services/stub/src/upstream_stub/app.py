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

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
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
    embedding_requests: int = 0
    embedding_inputs: int = 0
    chat_requests: int = 0
    started: float = field(default_factory=time.time)

    def counters(self) -> dict[str, int]:
        return {
            "embedding_requests": self.embedding_requests,
            "embedding_inputs": self.embedding_inputs,
            "chat_requests": self.chat_requests,
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
            raise HTTPException(400, detail="the stub does not stream")
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
        st.embedding_requests = st.embedding_inputs = st.chat_requests = 0
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
        return {
            "latency_ms": st.latency_ms,
            "fail_status": st.fail_status,
            "chat_chars": st.chat_chars,
            "retry_after": st.retry_after,
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
