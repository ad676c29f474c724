"""What one load-test answer counts as: ok, a mapped model error on a cold key, or a failure (pure, no I/O).

A key is *warm* when an earlier request for it was answered 200; a request is warm when all its keys are.
While the model fails the cache must keep answering warm requests (anything but 200 is a failure); a cold
request may instead get the API's own mapped error: 429 with `Retry-After`, 502 or 504, stamped by a replica
(`X-Instance`) with OpenAI's error envelope. Anything else (a connection error, an error nginx made itself,
another status, an answer after the deadline) is a failure. Whether a mapped error is acceptable at all
depends on the phase: the analysis counts them as failures outside the model phases.

A streamed answer (`classify_stream`) is 200 before the model is asked, so its failure comes inside the
stream: OpenAI's `data: {"error": ...}` event. For a cold request that event is the stream's mapped model
error (its status read from the error's type and code); for a warm one, or with no [DONE] at the end, or a
connection cut mid-stream, the stream failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadtest.sse import StreamTally

MAPPED_STATUSES = (429, 502, 504)


@dataclass(frozen=True)
class Outcome:
    """`kind` is "ok", "mapped" or "failed"; `reason` says why a failure failed."""

    kind: str
    status: int
    reason: str = ""
    cut: bool = False  # a stream whose connection closed mid-answer (no error event, no [DONE])


def is_openai_error(body: Any) -> bool:
    """True for `{"error": {"message": str, "type": str, ...}}`, the envelope the official SDKs parse."""
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


def classify(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    warm: bool,
    latency_ms: float,
    deadline_ms: float,
) -> Outcome:
    """One answer's outcome; `headers` keys are lower-case, `body` the parsed JSON (None when it was not JSON)."""
    if latency_ms > deadline_ms:
        return Outcome("failed", status, f"answered after the {deadline_ms / 1000:g} s deadline")
    if status == 0:
        return Outcome("failed", status, "no answer (connection error or client timeout)")
    if status == 200:
        if not headers.get("x-cache"):
            return Outcome("failed", status, "no X-Cache header")
        return Outcome("ok", status)
    if warm:
        return Outcome("failed", status, f"HTTP {status} for a warm key")
    if status not in MAPPED_STATUSES:
        return Outcome("failed", status, f"HTTP {status} (not a mapped model error)")
    if not headers.get("x-instance"):
        return Outcome("failed", status, f"HTTP {status} made by nginx, not a replica")
    if not is_openai_error(body):
        return Outcome("failed", status, f"HTTP {status} without OpenAI's error envelope")
    if status == 429 and not headers.get("retry-after"):
        return Outcome("failed", status, "HTTP 429 without Retry-After")
    return Outcome("mapped", status)


def event_status(event: Any) -> int | None:
    """The mapped status a stream's error event stands for (429, 502, 504), None when it is not a model error."""
    if not is_openai_error(event):
        return None
    error = event["error"]
    if error["type"] == "rate_limit_error":
        return 429
    if error["type"] != "server_error":
        return None
    return 504 if error.get("code") in ("upstream_timeout", "deadline_exceeded") else 502


def classify_stream(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    tally: StreamTally,
    *,
    cut: str,
    warm: bool,
    latency_ms: float,
    deadline_ms: float,
) -> Outcome:
    """One streamed answer's outcome: a non-200 as `classify`, else from its events; `cut` says why reading
    the stream stopped early ("" when it was read to its end)."""
    if status != 200:
        return classify(status, headers, body, warm=warm, latency_ms=latency_ms, deadline_ms=deadline_ms)
    if latency_ms > deadline_ms:
        return Outcome("failed", status, f"stream ended after the {deadline_ms / 1000:g} s deadline")
    if not headers.get("x-cache"):
        return Outcome("failed", status, "no X-Cache header")
    if tally.error is not None:
        message = str((tally.error.get("error") or {}).get("message", ""))[:80]
        mapped = event_status(tally.error)
        if warm or mapped is None:
            return Outcome("failed", status, f"error event{' for a warm key' if warm else ''}: {message}")
        return Outcome("mapped", mapped)
    if cut:
        return Outcome("failed", status, f"stream cut off after {tally.chunks} chunk(s): {cut}", cut=True)
    if not tally.done:
        return Outcome("failed", status, f"stream ended without data: [DONE] after {tally.chunks} chunk(s)")
    if tally.not_json:
        return Outcome("failed", status, f"{tally.not_json} event(s) not JSON")
    if not tally.content_chunks:
        return Outcome("failed", status, "no content chunk")
    return Outcome("ok", status)
