"""Locust users for the cache-sharing and chaos proofs: tenants asking for embeddings and chat answers, plain and
streamed (Server-Sent Events read as they arrive).

Headless runs are driven by loadtest/run.py; `make loadtest-ui` opens the same users in Locust's web UI
(cache outcomes so far at /cache-outcomes on the UI's port).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task
from locust.event import EventHook
from locust.user.wait_time import constant_pacing

from loadtest.keyspace import (
    TENANT_KEYS,
    KeyspaceConfig,
    ZipfSampler,
    chat_body,
    questions,
    stream_questions,
    texts,
)
from loadtest.outcome import Outcome, classify, classify_stream
from loadtest.recorder import Recorder
from loadtest.sse import StreamTally

log = logging.getLogger("loadtest")
RECORDER = Recorder()
# Custom event: fired once per successful cached-route response with its cache headers.
cache_outcome = EventHook()
cache_outcome.add_listener(RECORDER.on_cache_outcome)
_user_ids = itertools.count()
# Locust request events of this type only add rows to Locust's CSV/HTML tables (a stream's time to first
# content chunk); the recorder counts the stream once, from its own request event.
TTFC_TYPE = "SSE"
TTFC_NAME = "chat stream: time to first chunk"


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("RAG cache load test")
    group.add_argument("--timeline-out", default="", help="write the per-second timeline JSON here at exit")
    group.add_argument("--started-file", default="", help="touch this file with the start time (for run.py)")
    group.add_argument("--user-rps", type=float, default=4.0, help="requests per second per user (0: no pause)")
    group.add_argument("--deadline-s", type=float, default=10.0, help="an answer after this many seconds fails")
    group.add_argument("--n-texts", type=int, default=KeyspaceConfig.n_texts, help="embedding key universe")
    group.add_argument("--n-questions", type=int, default=KeyspaceConfig.n_questions, help="chat universe")
    group.add_argument(
        "--n-stream-questions", type=int, default=KeyspaceConfig.n_stream_questions, help="streamed chat universe"
    )
    group.add_argument("--zipf-s", type=float, default=KeyspaceConfig.zipf_s, help="Zipf exponent")
    group.add_argument("--seed", type=int, default=KeyspaceConfig.seed, help="base seed of the samplers")
    group.add_argument("--embedding-model", default=KeyspaceConfig.embedding_model)
    group.add_argument("--chat-model", default=KeyspaceConfig.chat_model)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    if environment.web_ui is not None:

        @environment.web_ui.app.route("/cache-outcomes")
        def _cache_outcomes() -> dict[str, Any]:
            return {**RECORDER.totals(), "unique_keys": {k: len(v) for k, v in RECORDER.unique_keys.items()}}


@events.request.add_listener
def _on_request(
    request_type: str,
    name: str,
    response_time: float,
    exception: BaseException | None = None,
    start_time: float | None = None,
    context: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    if request_type != TTFC_TYPE:
        RECORDER.on_request(response_time, exception, name, start_time, context)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    RECORDER.reset()
    RECORDER.started_at = time.time()
    started_file = getattr(environment.parsed_options, "started_file", "")
    if started_file:
        Path(started_file).write_text(f"{RECORDER.started_at}\n")


@events.test_stop.add_listener
def _on_test_stop(**_: Any) -> None:
    RECORDER.stopped_at = time.time()
    totals = RECORDER.totals()
    log.info(
        "cache outcomes %s, tiers %s, cross-instance hits %s, unique keys %s",
        totals["cache"],
        totals["tiers"],
        totals["cross_instance_hits"],
        {k: len(v) for k, v in RECORDER.unique_keys.items()},
    )


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    out = getattr(environment.parsed_options, "timeline_out", "")
    if out:
        RECORDER.dump(Path(out))


def _json_or_none(text: str | None) -> Any:
    """The parsed body, or None when it is empty or not JSON (an error page, a cut-off answer)."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


class TenantUser(FastHttpUser):
    """One school's client: single and batched embeddings and chat questions, drawn Zipf-skewed."""

    # Longer than --deadline-s (10 s): a slow answer still arrives, is measured (the phase's p95 and max show
    # it) and is then failed as late, rather than cut off by the client with no figure.
    network_timeout = 30.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.user_id = next(_user_ids)
        self.api_key = list(TENANT_KEYS)[self.user_id % len(TENANT_KEYS)]
        self.tenant = str(TENANT_KEYS[self.api_key])
        self.rps = float(getattr(opts, "user_rps", 4.0))
        self.deadline_ms = 1000 * float(getattr(opts, "deadline_s", 10.0))
        self.emb_model = getattr(opts, "embedding_model", KeyspaceConfig.embedding_model)
        self.chat_model = getattr(opts, "chat_model", KeyspaceConfig.chat_model)
        seed = int(getattr(opts, "seed", KeyspaceConfig.seed)) + self.user_id
        s = float(getattr(opts, "zipf_s", KeyspaceConfig.zipf_s))
        self.texts = texts(int(getattr(opts, "n_texts", KeyspaceConfig.n_texts)))
        self.questions = questions(int(getattr(opts, "n_questions", KeyspaceConfig.n_questions)))
        self.stream_questions = stream_questions(
            int(getattr(opts, "n_stream_questions", KeyspaceConfig.n_stream_questions))
        )
        self.text_sampler = ZipfSampler(len(self.texts), s, seed)
        self.question_sampler = ZipfSampler(len(self.questions), s, seed + 1_000_003)
        self.stream_sampler = ZipfSampler(len(self.stream_questions), s, seed + 2_000_003)
        self.headers = {"Authorization": f"Bearer {self.api_key}"}

    def wait_time(self) -> float:
        return constant_pacing(1.0 / self.rps)(self) if self.rps > 0 else 0.0

    def _post(
        self,
        path: str,
        name: str,
        body: dict[str, Any],
        kind: str,
        keys: list[tuple[str, ...]],
        expect_items: int | None,
    ) -> None:
        RECORDER.note_keys(kind, keys)
        warm = RECORDER.is_warm(keys)
        context = {"warm": warm}
        with self.client.post(
            path, json=body, headers=self.headers, name=name, catch_response=True, context=context
        ) as resp:
            RECORDER.note_completed(kind, keys)
            headers = {k.lower(): v for k, v in (resp.headers or {}).items()}
            payload = None
            if resp.status_code and (resp.status_code != 200 or expect_items is not None):
                payload = _json_or_none(resp.text)
            outcome = classify(
                resp.status_code,
                headers,
                payload,
                warm=warm,
                latency_ms=float(resp.request_meta["response_time"]),
                deadline_ms=self.deadline_ms,
            )
            if outcome.kind == "ok" and expect_items is not None:
                data = (payload or {}).get("data", [])
                if len(data) != expect_items:
                    resp.failure(f"{len(data)} embeddings for {expect_items} inputs")
                    return
            detail = ""
            if outcome.kind == "failed":
                detail = resp.error if resp.status_code == 0 else (resp.text or "")[:80]
            if self._settle(resp, name, outcome, detail):
                self._cache_outcome(keys, headers)

    def _stream(self, question: str) -> None:
        """One streamed chat request read as it arrives: its total time is the request's response time, its
        time to first content chunk a row of its own in Locust's tables."""
        key = (self.tenant, "chat-stream", self.chat_model, question)
        body = {**chat_body(self.chat_model, question), "stream": True}
        RECORDER.note_keys("stream", [key])
        warm = RECORDER.is_warm([key])
        context: dict[str, Any] = {"warm": warm, "stream": True}
        name = "POST /v1/chat/completions [stream]"
        started = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers={**self.headers, "Accept": "text/event-stream", "Accept-Encoding": "identity"},
            name=name,
            catch_response=True,
            context=context,
            stream=True,
        ) as resp:
            tally, cut, payload = StreamTally(started), "", None
            headers = {k.lower(): v for k, v in (resp.headers or {}).items()}
            if resp.status_code == 200:
                cut = _read_events(resp, tally)
            elif resp.status_code:
                payload = _json_or_none(resp.text)
            total_ms = 1000 * (time.perf_counter() - started)
            RECORDER.note_completed("stream", [key])
            resp.request_meta["response_time"] = total_ms
            # (Locust sends a copy of `context`: the recorder reads the request's own.)
            resp.request_meta["context"].update(ttfc_ms=tally.ttfc_ms(), stream_role=headers.get("x-cache-stream"))
            outcome = classify_stream(
                resp.status_code, headers, payload, tally, cut=cut, warm=warm, latency_ms=total_ms,
                deadline_ms=self.deadline_ms,
            )  # fmt: skip
            if outcome.cut:  # when it broke off: the analysis knows when a replica was killed
                resp.request_meta["context"]["stream_cut_at"] = time.time()
            if self._settle(resp, name, outcome, resp.error if resp.status_code == 0 else ""):
                self._report_ttfc(tally, resp.request_meta["start_time"])
                role = headers.get("x-cache-stream", "")
                self._cache_outcome([key], headers, computed=role != "follower")

    def _settle(self, resp: Any, name: str, outcome: Outcome, detail: Any) -> bool:
        """Mark the request as the outcome says; True when it succeeded with an answer."""
        if outcome.kind == "mapped":
            # Not a failure in Locust's tables (the analysis decides per phase); listed under its own name.
            resp.request_meta["context"]["mapped"] = outcome.status
            resp.request_meta["name"] = f"{name} [cold, model error {outcome.status}]"
            resp.success()
            return False
        if outcome.kind == "failed":
            resp.failure(f"{outcome.reason}: {detail or ''}".rstrip(": "))
            return False
        resp.success()
        return True

    def _report_ttfc(self, tally: StreamTally, start_time: float) -> None:
        ttfc = tally.ttfc_ms()
        if ttfc is not None:
            self.environment.events.request.fire(
                request_type=TTFC_TYPE,
                name=TTFC_NAME,
                response_time=ttfc,
                response_length=tally.chunks,
                exception=None,
                context={},
                start_time=start_time,
            )

    @staticmethod
    def _cache_outcome(keys: list[tuple[str, ...]], headers: Mapping[str, str], computed: bool = True) -> None:
        cache_outcome.fire(
            keys=keys,
            cache=headers["x-cache"].upper(),
            tier=(headers.get("x-cache-tier") or "none").lower(),
            instance=headers.get("x-instance") or "?",
            computed=computed,
        )

    @task(5)
    def embed_one(self) -> None:
        text = self.texts[self.text_sampler.draw()]
        body = {"model": self.emb_model, "input": text}
        key = (self.tenant, "emb", self.emb_model, text)
        self._post("/v1/embeddings", "POST /v1/embeddings", body, "embedding", [key], 1)

    @task(2)
    def embed_batch(self) -> None:
        batch = [self.texts[i] for i in self.text_sampler.draw_distinct(3)]
        body = {"model": self.emb_model, "input": batch}
        keys: list[tuple[str, ...]] = [(self.tenant, "emb", self.emb_model, t) for t in batch]
        self._post("/v1/embeddings", "POST /v1/embeddings [batch]", body, "embedding", keys, len(batch))

    @task(3)
    def chat(self) -> None:
        question = self.questions[self.question_sampler.draw()]
        key = (self.tenant, "chat", self.chat_model, question)
        body = chat_body(self.chat_model, question)
        self._post("/v1/chat/completions", "POST /v1/chat/completions", body, "chat", [key], None)

    @task(2)
    def chat_stream(self) -> None:
        self._stream(self.stream_questions[self.stream_sampler.draw()])


def _read_events(resp: Any, tally: StreamTally) -> str:
    """Feed the SSE body to `tally` line by line as it arrives; returns why reading stopped early, else "".

    geventhttpclient's `readline` hands over each line as soon as it is in (Locust's `iter_content(n)` waits
    for n bytes, which would hide the time to the first chunk); the socket's network_timeout bounds each wait.
    """
    body = resp._response  # private: the only way to read lines as they arrive
    try:
        while not tally.done and tally.error is None:
            line = body.readline(b"\n")
            if not line:
                break
            tally.feed(line, time.perf_counter())
        if tally.done or tally.error is not None:
            body.read()  # drain to the end, so the connection goes back to the pool clean
    except Exception as exc:  # a connection cut or a timeout mid-stream, whatever its class, ends the read
        return f"{type(exc).__name__}: {exc}"[:120]
    return ""
