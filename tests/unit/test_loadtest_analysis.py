"""The load test's verdict logic on small synthetic timelines: outcomes, phase figures, checks (no network)."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from loadtest.analysis import (
    Thresholds,
    chaos_checks,
    kill_cut_check,
    model_checks,
    model_windows,
    notes,
    phase_figures,
    rate_check,
    recovery_check,
    sharing_checks,
    stream_check,
    upstream_calls_by_phase,
)
from loadtest.keyspace import questions, stream_questions
from loadtest.outcome import classify, classify_stream
from loadtest.plan import DEFAULT_DURATION, MODEL_PHASES, Phase, chaos_phases, chaos_plan
from loadtest.recorder import Recorder, Second
from loadtest.sse import StreamTally

T0 = 1_000_000.0
TH = Thresholds()
API_ERROR = {"error": {"message": "the model failed", "type": "upstream_error", "param": None, "code": None}}
FROM_REPLICA = {"x-instance": "api-1"}


def second(
    t: float,
    *,
    hits: int = 0,
    misses: int = 0,
    warm: int = 0,
    cold: int = 0,
    failures: int = 0,
    warm_failures: int = 0,
    mapped: dict[str, int] | None = None,
    latency_ms: float = 10.0,
    streams: int = 0,
    stream_failures: int = 0,
    stream_mapped: int = 0,
    ttfc_ms: float = 5.0,
) -> dict[str, Any]:
    """One timeline bucket as the recorder writes it: `warm` + `cold` requests, the given outcomes."""
    sec = Second(
        requests=warm + cold,
        failures=failures,
        latencies_ms=[latency_ms] * (warm + cold),
        cache=Counter({"HIT": hits, "MISS": misses}),
        tiers=Counter({"redis": hits + misses}),
        warm_latencies_ms=[latency_ms] * warm,
        cold_latencies_ms=[latency_ms] * cold,
        warm_failures=warm_failures,
        mapped=Counter(mapped or {}),
        stream_requests=streams,
        stream_failures=stream_failures,
        stream_mapped=stream_mapped,
        ttfc_ms=[ttfc_ms] * streams,
        stream_total_ms=[latency_ms] * streams,
    )
    return sec.to_json(int(t))


def timeline(seconds: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"started_at": T0, "stopped_at": T0 + len(seconds), "seconds": seconds, **extra}


# --- one answer's outcome ---------------------------------------------------------------------------------


def outcome(status: int, headers: dict[str, str], body: Any = None, *, warm: bool = False, ms: float = 50) -> str:
    result = classify(status, headers, body, warm=warm, latency_ms=ms, deadline_ms=10_000)
    return f"{result.kind}: {result.reason}" if result.reason else result.kind


def test_a_cold_miss_gets_the_apis_mapped_error() -> None:
    """A cold key's 502/504 from a replica with OpenAI's envelope, or its 429 with Retry-After, is a mapped error."""
    assert outcome(502, FROM_REPLICA, API_ERROR) == "mapped"
    assert outcome(504, FROM_REPLICA, API_ERROR) == "mapped"
    assert outcome(429, FROM_REPLICA | {"retry-after": "1"}, API_ERROR) == "mapped"


@pytest.mark.parametrize(
    ("status", "headers", "body", "warm", "reason"),
    [
        (502, FROM_REPLICA, API_ERROR, True, "HTTP 502 for a warm key"),
        (502, {}, {"detail": "no API replica answered"}, False, "made by nginx"),
        (502, FROM_REPLICA, {"detail": "upstream failed"}, False, "without OpenAI's error envelope"),
        (429, FROM_REPLICA, API_ERROR, False, "without Retry-After"),
        (500, FROM_REPLICA, API_ERROR, False, "not a mapped model error"),
        (0, {}, None, False, "no answer"),
        (200, FROM_REPLICA, None, True, "no X-Cache header"),
    ],
)
def test_failures(status: int, headers: dict[str, str], body: Any, warm: bool, reason: str) -> None:
    """A warm key's error, an nginx error, a bare body, a 429 without Retry-After, another status, no answer fail."""
    assert outcome(status, headers, body, warm=warm).startswith("failed"), reason
    assert reason in outcome(status, headers, body, warm=warm)


def test_an_answer_after_the_deadline_fails_even_when_it_is_200() -> None:
    """Late is failed: the API's own deadline should have answered first."""
    assert "deadline" in outcome(200, {"x-cache": "HIT"}, warm=True, ms=10_001)
    assert outcome(200, {"x-cache": "HIT"}, warm=True, ms=9_999) == "ok"


def test_recorder_knows_warm_keys_and_counts_mapped_errors_apart() -> None:
    """A key is warm once answered 200; a mapped error is counted by status and is not a failure."""
    rec = Recorder()
    key = ("123", "emb", "m", "text")
    assert not rec.is_warm([key])
    rec.on_cache_outcome([key], "MISS", "none", "api-1")
    assert rec.is_warm([key])
    assert not rec.is_warm([key, ("123", "emb", "m", "other")])
    rec.on_request(5.0, None, "POST /v1/embeddings", T0, {"warm": False, "mapped": 502})
    rec.on_request(5.0, RuntimeError("HTTP 502 for a warm key"), "POST /v1/embeddings", T0, {"warm": True})
    sec = rec.to_json()["seconds"][0]
    assert sec["mapped"] == {"502": 1}
    assert (sec["failures"], sec["warm_failures"], sec["warm_requests"], sec["cold_requests"]) == (1, 1, 1, 1)


# --- phase figures ---------------------------------------------------------------------------------------


def test_mapped_errors_are_failures_only_outside_the_model_phases() -> None:
    """502s for cold keys are expected while the model is down and failures while Redis is down."""
    tl = timeline([second(T0 + i, warm=8, cold=2, hits=8, mapped={"502": 2}) for i in range(4)])
    model = phase_figures(tl, Phase("model-down", T0, T0 + 2), upstream_calls=3)
    redis = phase_figures(tl, Phase("redis-down", T0 + 2, T0 + 4))
    assert (model["failures"], model["mapped"], model["cold_requests"]) == (0, {"502": 4}, 4)
    assert redis["failures"] == 4
    assert model["upstream_calls"] == 3


def test_upstream_calls_per_phase_from_counter_snapshots() -> None:
    """Each phase's calls are the counters' growth until the next phase; a missing snapshot leaves it out."""
    snaps = [
        ("warm", {"embedding_requests": 0, "chat_requests": 0}),
        ("model-down", {"embedding_requests": 50, "chat_requests": 20}),
        ("model-slow", {}),
        ("model-429", {"embedding_requests": 90, "chat_requests": 30, "chat_streams": 4}),
    ]
    calls = upstream_calls_by_phase(snaps, {"embedding_requests": 95, "chat_requests": 31, "chat_streams": 7})
    assert calls == {"warm": 70, "model-429": 9}


# --- checks ----------------------------------------------------------------------------------------------


def by_name(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in checks}


def model_fig(**over: Any) -> dict[str, Any]:
    fig = {"phase": "model-down", "requests": 100, "cold_requests": 20, "cold_failures": 0}
    return fig | {"mapped": {"502": 20}, "upstream_calls": 20} | over


def test_model_phase_passes_with_mapped_misses_and_one_call_per_request() -> None:
    """All cold misses mapped and 20 model calls for 100 requests: both checks pass."""
    checks = by_name(model_checks(model_fig(), TH))
    assert checks["cold misses [model-down]"]["value"] == "20/20 (502x20)"
    mixed = model_checks(model_fig(cold_requests=30, mapped={"502": 18, "504": 2}), TH)[0]
    assert mixed["value"] == "30/30 (200x10, 502x18, 504x2)"
    assert all(c["result"] == "PASS" for c in checks.values())


def test_model_phase_fails_on_a_bad_miss_or_retried_calls() -> None:
    """A cold miss outside the mapped set, or more model calls than client requests, fails."""
    bad_miss = by_name(model_checks(model_fig(cold_failures=1), TH))
    retried = by_name(model_checks(model_fig(upstream_calls=101), TH))
    assert bad_miss["cold misses [model-down]"]["result"] == "FAIL"
    assert retried["upstream calls / client requests [model-down]"]["result"] == "FAIL"


def test_model_phase_without_cold_keys_or_counters_is_not_measured() -> None:
    """No cold key asked, no stub counters: n/a with what was missing, and the verdict does not fail."""
    checks = model_checks(model_fig(cold_requests=0, mapped={}, upstream_calls=None), TH)
    assert [c["result"] for c in checks] == ["n/a", "n/a"]
    assert all(c["passed"] for c in checks)
    assert "no cold key" in checks[0]["value"]
    assert "no stub counters" in checks[1]["value"]


def test_sharing_counts_only_keys_whose_requests_completed() -> None:
    """740 calls for 740 completed keys, one key cut off at stop: 1.00 and PASS (the #16 run read FAIL)."""
    tl = timeline(
        [second(T0, warm=10, hits=10)],
        unique_keys={"embedding": 741, "chat": 200},
        completed_keys={"embedding": 740, "chat": 200},
    )
    fig = phase_figures(tl, Phase("run", T0, T0 + 1)) | {"cross_instance_hits": 5}
    for calls, passed in ((740, True), (741, True), (742, False), (739, False)):
        checks = by_name(sharing_checks(fig, tl, {"embedding_inputs": calls, "chat_requests": 200}, 10, TH))
        emb = checks["embedding inputs / unique embedding keys"]
        assert emb["passed"] is passed, calls
        assert "1 key(s) cut off" in emb["value"]
        assert checks["chat requests / unique chat keys"]["value"] == "200/200 = 1.00"


def test_sharing_without_stub_counters_is_not_measured() -> None:
    """The stub did not answer at the end: the ratio checks say so instead of failing on a made-up -1."""
    tl = timeline([second(T0, warm=10, hits=10)], unique_keys={"embedding": 5, "chat": 1})
    fig = phase_figures(tl, Phase("run", T0, T0 + 1)) | {"cross_instance_hits": 5}
    checks = by_name(sharing_checks(fig, tl, {}, 10, TH))
    assert checks["chat requests / unique chat keys"]["result"] == "n/a"
    assert all(c["passed"] for c in checks.values())


def test_a_warm_phase_below_its_target_rate_is_reported_not_failed() -> None:
    """43 req/s of an 80 req/s target: WARN, and the run is not failed for it."""
    low = rate_check({"phase": "warm", "rps": 43.0}, 80.0, TH)
    assert (low["result"], low["passed"]) == ("WARN", True)
    assert rate_check({"phase": "warm", "rps": 78.0}, 80.0, TH)["result"] == "PASS"


def recovery_timeline() -> tuple[dict[str, Any], list[Phase]]:
    """10 s warm at 0.80 hits, 5 s Redis down at 0.50, then back to 0.80 from t=17."""
    secs = [second(T0 + i, warm=10, hits=8, misses=2) for i in range(10)]
    secs += [second(T0 + i, warm=10, hits=5, misses=5) for i in range(10, 17)]
    secs += [second(T0 + i, warm=10, hits=8, misses=2) for i in range(17, 30)]
    phases = [Phase("warm", T0, T0 + 10), Phase("redis-down", T0 + 10, T0 + 15), Phase("redis-back", T0 + 15, T0 + 30)]
    return timeline(secs), phases


def test_recovery_is_timed_from_redis_answering_again() -> None:
    """Back to 0.75 (0.80 - 0.05) in the 3 s window ending at t=20: 5 s after Redis answered at t=15."""
    tl, phases = recovery_timeline()
    rec = recovery_check(tl, phases, T0 + 15, TH)
    assert (rec["result"], rec["value"]) == ("PASS", "5 s (to 0.75)")
    assert recovery_check(tl, phases, T0 + 15, Thresholds(recovery_s=3))["result"] == "FAIL"


@pytest.mark.parametrize(
    ("redis_back", "warm_hits", "run_end", "missing"),
    [
        (None, 8, 30, "redis-start did not complete"),
        (15, 0, 30, "no cacheable answer in the warm phase"),
        (15, 8, 18, "the run ended 3 s after Redis was back"),
    ],
)
def test_a_gap_in_the_recovery_measurement_is_na_not_fail(
    redis_back: float | None, warm_hits: int, run_end: int, missing: str
) -> None:
    """No redis-start, no warm level, or a run too short to see the window: n/a saying so (#16: read FAIL)."""
    tl, phases = recovery_timeline()
    for sec in tl["seconds"][:10]:
        sec["cache"] = {"HIT": warm_hits, "MISS": 0} if warm_hits else {}
    tl["seconds"] = [s for s in tl["seconds"] if s["t"] < T0 + run_end]
    phases[-1] = Phase("redis-back", T0 + 15, T0 + run_end)
    for sec in tl["seconds"][15:]:
        sec["cache"] = {"HIT": 1, "MISS": 9}  # never recovers: only the gap may excuse it
    rec = recovery_check(tl, phases, None if redis_back is None else T0 + redis_back, TH)
    assert (rec["result"], rec["passed"]) == ("n/a", True)
    assert missing in rec["value"]


def test_chaos_checks_pass_a_clean_run_with_model_phases() -> None:
    """Warm, model-down (cold misses mapped), model-back and Redis phases without failures: every check passes."""
    secs = [second(T0 + i, warm=8, cold=2, hits=8, misses=2) for i in range(10)]
    secs += [second(T0 + i, warm=8, cold=2, hits=8, mapped={"502": 2}) for i in range(10, 15)]
    secs += [second(T0 + i, warm=8, cold=2, hits=8, misses=2) for i in range(15, 40)]
    tl = timeline(secs)
    names = ["warm", "model-down", "model-back", "redis-down", "redis-back"]
    starts = [0, 10, 15, 20, 25, 40]
    phases = [Phase(n, T0 + a, T0 + b) for n, a, b in zip(names, starts, starts[1:], strict=False)]
    calls = {"model-down": 4, "model-back": 10}
    figures = [phase_figures(tl, ph, calls.get(ph.name)) for ph in phases]
    checks = chaos_checks(tl, phases, figures, T0 + 25, 10.0, TH)
    failed = [c for c in checks if c["result"] not in ("PASS", "n/a")]
    assert not failed, failed
    assert by_name(checks)["failed requests [model-down]"]["value"] == "0 (warm keys 0)"


def test_a_warm_key_failing_in_a_model_phase_fails_the_run() -> None:
    """One non-200 answer for a warm key while the model is down fails that phase."""
    secs = [second(T0 + i, warm=10, hits=10) for i in range(5)]
    secs += [second(T0 + 5, warm=10, hits=9, failures=1, warm_failures=1)]
    tl = timeline(secs)
    phases = [Phase("warm", T0, T0 + 5), Phase("model-down", T0 + 5, T0 + 6)]
    figures = [phase_figures(tl, ph, 0) for ph in phases]
    check = by_name(chaos_checks(tl, phases, figures, None, 10.0, TH))["failed requests [model-down]"]
    assert (check["result"], check["value"]) == ("FAIL", "1 (warm keys 1)")


# --- the plan ----------------------------------------------------------------------------------------------


def test_plan_puts_model_phases_before_redis_and_scales_to_the_run() -> None:
    """Model phases run while Redis is up; starts are whole seconds in order; skipping drops whole phases."""
    names = [p for _, p, _ in chaos_plan()]
    assert names.index("model-back") < names.index("redis-down")
    assert DEFAULT_DURATION == 120
    phases = chaos_phases(T0 + 0.3, T0 + 40.3, 40)
    assert [p.start == int(p.start) for p in phases[1:]] == [True] * (len(phases) - 1)
    assert all(a.end == b.start and a.start < b.start for a, b in itertools.pairwise(phases))
    short = [p.name for p in chaos_phases(T0, T0 + 15, 15, skip_replica=True, skip_model=True)]
    assert short == ["warm", "redis-down", "redis-back", "recovered"]
    assert not MODEL_PHASES & set(short)


def test_a_mapped_error_sent_just_before_a_model_phase_is_expected() -> None:
    """A cold miss sent in the second before the model starts failing gets its error: not a warm-phase failure."""
    tl = timeline([second(T0 + i, warm=8, cold=2, hits=8, mapped={"502": 1} if i >= 3 else None) for i in range(6)])
    phases = [Phase("warm", T0, T0 + 4), Phase("model-down", T0 + 4, T0 + 6)]
    warm = phase_figures(tl, phases[0], windows=model_windows(phases))
    assert (warm["mapped"], warm["failures"]) == ({"502": 1}, 0)
    assert phase_figures(tl, phases[0])["failures"] == 1  # without the windows: a failure


def test_notes_say_how_long_misses_failed_after_the_model_healed() -> None:
    """Mapped errors until the 2nd second of model-back: "until 2 s after the model healed"."""
    tl = timeline([second(T0 + i, cold=2, mapped={"429": 1} if i < 2 else None) for i in range(5)])
    phases = [Phase("model-back", T0, T0 + 5)]
    figures = [phase_figures(tl, phases[0])]
    assert notes(tl, phases, figures, 2.0) == [
        "model-back: cold misses got mapped errors until 2 s after the model healed (breakers)"
    ]


# --- streamed chat ---------------------------------------------------------------------------------------

CHUNK = 'data: {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "%s"}}]}'
ROLE = 'data: {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}'
ERROR_EVENT = 'data: {"error": {"message": "upstream 503", "type": "server_error", "param": null, "code": "%s"}}'
SSE_OK = {"x-cache": "MISS", "x-cache-stream": "leader", "x-instance": "api-1"}


def tally(*lines: str, step: float = 0.01) -> StreamTally:
    """A stream fed `lines` one `step` apart, from t=0."""
    out = StreamTally(0.0)
    for i, line in enumerate(lines):
        out.feed(line.encode(), (i + 1) * step)
    return out


def stream_outcome(t: StreamTally, *, cut: str = "", warm: bool = False, status: int = 200) -> str:
    result = classify_stream(status, SSE_OK, None, t, cut=cut, warm=warm, latency_ms=50, deadline_ms=10_000)
    return f"{result.kind} {result.status}: {result.reason}" if result.reason else f"{result.kind} {result.status}"


def test_a_stream_is_timed_to_its_first_content_chunk_and_ok_with_done() -> None:
    """The role chunk is not content: TTFC is at the first delta with text; [DONE] after content is ok."""
    t = tally(ROLE, "", ": keep-alive", CHUNK % "Hel", "", CHUNK % "lo", "data: [DONE]")
    assert (t.chunks, t.content_chunks, t.done) == (3, 2, True)
    assert t.ttfc_ms() == pytest.approx(40.0)
    assert stream_outcome(t) == "ok 200"


@pytest.mark.parametrize(
    ("lines", "cut", "warm", "expected"),
    [
        ((ROLE, CHUNK % "a", ERROR_EVENT % "upstream_error"), "", False, "mapped 502"),
        ((ROLE, ERROR_EVENT % "upstream_timeout"), "", False, "mapped 504"),
        ((ROLE, CHUNK % "a", ERROR_EVENT % "upstream_error"), "", True, "failed 200: error event for a warm key"),
        ((ROLE, CHUNK % "a"), "", False, "failed 200: stream ended without data: [DONE] after 2 chunk(s)"),
        ((ROLE, CHUNK % "a"), "HTTPConnectionClosed", False, "failed 200: stream cut off after 2 chunk(s)"),
        ((ROLE, "data: [DONE]"), "", False, "failed 200: no content chunk"),
        ((ROLE, "data: {not json", CHUNK % "a", "data: [DONE]"), "", False, "failed 200: 1 event(s) not JSON"),
    ],
)
def test_a_stream_fails_on_an_error_event_a_cut_or_no_done(
    lines: tuple[str, ...], cut: str, warm: bool, expected: str
) -> None:
    """An error event is a cold key's mapped model error and a warm key's failure; a cut or no [DONE] fails."""
    assert stream_outcome(tally(*lines), cut=cut, warm=warm).startswith(expected)


def test_a_rate_limited_stream_maps_to_429_and_a_non_200_is_classified_as_before() -> None:
    """A rate-limit error event stands for 429; a stream answered 503 by nginx is failed like any request."""
    limited = '{"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "x"}}'
    assert stream_outcome(tally(f"data: {limited}")) == "mapped 429"
    assert stream_outcome(tally(), status=503).startswith("failed 503: HTTP 503 (not a mapped model error)")


def test_streaming_questions_never_equal_plain_chat_questions() -> None:
    """A streamed and a plain request with the same body share a cache entry: the key spaces stay disjoint."""
    assert not set(stream_questions(500)) & set(questions(500))
    assert len(set(stream_questions(500))) == 500


def test_recorder_keeps_a_streams_ttfc_total_and_role() -> None:
    """A stream's request event carries its TTFC and role; a mapped stream is counted apart, not failed."""
    rec = Recorder()
    rec.on_request(
        300.0, None, "stream", T0, {"warm": False, "stream": True, "ttfc_ms": 120.0, "stream_role": "leader"}
    )
    rec.on_request(8.0, None, "stream", T0, {"warm": True, "stream": True, "ttfc_ms": 2.0, "stream_role": "replay"})
    rec.on_request(90.0, None, "stream", T0, {"warm": False, "stream": True, "ttfc_ms": None, "mapped": 502})
    rec.on_request(9.0, None, "POST /v1/embeddings", T0, {"warm": True})
    sec = rec.to_json()["seconds"][0]
    assert (sec["requests"], sec["stream_requests"], sec["stream_failures"], sec["stream_mapped"]) == (4, 3, 0, 1)
    assert (sec["ttfc_ms"], sec["stream_total_ms"]) == ([120.0, 2.0], [300.0, 8.0, 90.0])
    assert sec["stream_roles"] == {"leader": 1, "replay": 1}


def test_a_follower_miss_does_not_claim_the_computation() -> None:
    """A stream follower's MISS on api-2 is not "computed by api-2": a later HIT there is a cross-instance hit."""
    rec = Recorder()
    key = ("123", "chat-stream", "m", "q")
    rec.on_cache_outcome([key], "MISS", "none", "api-2", computed=False)
    rec.on_cache_outcome([key], "MISS", "none", "api-1")
    rec.on_cache_outcome([key], "HIT", "redis", "api-2")
    assert rec.to_json()["seconds"][0]["cross_instance_hits"] == 1


def test_stream_figures_per_phase_and_a_mapped_stream_outside_the_model_phases_fails() -> None:
    """TTFC p50/p95 per phase; a stream's mapped error while Redis is down is a failed stream."""
    tl = timeline([second(T0 + i, warm=4, hits=4, streams=2, ttfc_ms=10.0 * (i + 1)) for i in range(4)])
    tl["seconds"][3]["stream_mapped"] = 1
    fig = phase_figures(tl, Phase("redis-down", T0, T0 + 4))
    assert (fig["stream_requests"], fig["ttfc_p50_ms"], fig["ttfc_p95_ms"]) == (8, 20.0, 40.0)
    assert (fig["stream_failures"], fig["stream_mapped"]) == (1, 1)
    check = stream_check(fig)
    assert (check["result"], check["value"]) == ("FAIL", "1 of 8 (TTFC p95 40 ms)")


def test_chaos_checks_streams_in_the_redis_phases_and_says_when_there_were_none() -> None:
    """Zero failed streams while Redis is down passes; a Redis phase without streams is n/a, not a pass."""
    secs = [second(T0 + i, warm=10, hits=10, streams=2) for i in range(10)]
    secs += [second(T0 + i, warm=10, hits=10) for i in range(10, 20)]
    tl = timeline(secs)
    phases = [Phase("warm", T0, T0 + 5), Phase("redis-down", T0 + 5, T0 + 10), Phase("redis-back", T0 + 10, T0 + 20)]
    figures = [phase_figures(tl, ph) for ph in phases]
    checks = by_name(chaos_checks(tl, phases, figures, T0 + 10, 10.0, TH))
    assert (checks["failed streams [redis-down]"]["result"], checks["failed streams [redis-down]"]["value"]) == (
        "PASS",
        "0 of 10 (TTFC p95 5 ms)",
    )
    assert checks["failed streams [redis-back]"]["result"] == "n/a"
    assert "no streamed request" in checks["failed streams [redis-back]"]["value"]


def test_sharing_counts_one_upstream_stream_per_streaming_key() -> None:
    """30 upstream streams for 30 completed streaming keys (2 cut off): PASS; 33 streams: FAIL; no counter: n/a."""
    tl = timeline(
        [second(T0, warm=10, hits=10)],
        unique_keys={"embedding": 5, "chat": 2, "stream": 32},
        completed_keys={"embedding": 5, "chat": 2, "stream": 30},
    )
    fig = phase_figures(tl, Phase("run", T0, T0 + 1)) | {"cross_instance_hits": 5}
    name = "upstream streams / unique streaming keys"
    stub = {"embedding_inputs": 5, "chat_requests": 2}
    for streams, result in ((30, "PASS"), (32, "PASS"), (33, "FAIL"), (29, "FAIL")):
        check = by_name(sharing_checks(fig, tl, stub | {"chat_streams": streams}, 10, TH))[name]
        assert check["result"] == result, streams
    assert by_name(sharing_checks(fig, tl, stub | {"chat_streams": 30}, 10, TH))[name]["value"] == (
        "30/30 = 1.00 (2 key(s) cut off at stop, not counted)"
    )
    assert by_name(sharing_checks(fig, tl, stub, 10, TH))[name]["result"] == "n/a"


def test_only_a_cut_stream_is_marked_cut() -> None:
    """A connection closed mid-answer is a cut; an error event or a clean end without [DONE] is not."""
    cut = classify_stream(200, SSE_OK, None, tally(ROLE), cut="closed", warm=True, latency_ms=5, deadline_ms=1e4)
    event = classify_stream(
        200, SSE_OK, None, tally(ROLE, ERROR_EVENT % "x"), cut="closed", warm=True, latency_ms=5, deadline_ms=1e4
    )
    ended = classify_stream(200, SSE_OK, None, tally(ROLE), cut="", warm=True, latency_ms=5, deadline_ms=1e4)
    assert [o.cut for o in (cut, event, ended)] == [True, False, False]
    assert [o.kind for o in (cut, event, ended)] == ["failed"] * 3


def kill_timeline() -> tuple[dict[str, Any], list[Phase]]:
    """Streams every second; three cut streams: in flight at the kill (t=10.2-10.9), one sent after the kill
    had ended (t=12.5), and one that broke off long after it (t=15)."""
    secs = [second(T0 + i, warm=10, hits=10, streams=2) for i in range(20)]
    rec = Recorder()
    for sent, broke in ((T0 + 9.6, T0 + 10.5), (T0 + 12.5, T0 + 12.6), (T0 + 14.2, T0 + 15.0)):
        rec.on_request(50.0, RuntimeError("stream cut off"), "s", sent, {"warm": True, "stream": True,
                                                                          "stream_cut_at": broke})  # fmt: skip
    for t, sec in rec.seconds.items():
        secs[t - int(T0)] = second(t, warm=10, hits=9, streams=3, failures=1, warm_failures=1, stream_failures=1) | {
            "stream_cuts": sec.stream_cuts
        }
    return timeline(secs), [Phase("redis-back", T0, T0 + 10), Phase("replica-down", T0 + 10, T0 + 20)]


def test_a_stream_cut_by_the_replica_kill_is_reported_and_any_other_cut_fails() -> None:
    """The stream in flight when the kill ran (10.2-10.9 s) is counted apart, in the phase it was sent in;
    the one sent after the kill and the one cut 4 s later stay failures."""
    tl, phases = kill_timeline()
    kills = [(T0 + 10.2, T0 + 10.9)]
    back, down = (phase_figures(tl, ph, kills=kills) for ph in phases)
    assert (back["failures"], back["stream_failures"], back["stream_cut_by_kill"], back["warm_failures"]) == (
        0,
        0,
        1,
        0,
    )
    assert (down["failures"], down["stream_failures"], down["stream_cut_by_kill"]) == (2, 2, 0)
    assert phase_figures(tl, phases[0])["failures"] == 1  # no kill known: a failure
    report = kill_cut_check([back, down])
    assert (report["result"], report["passed"]) == ("WARN", True)
    assert report["value"].startswith("1 (in flight on the killed replica")
    assert kill_cut_check([down])["result"] == "PASS"
