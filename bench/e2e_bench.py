"""End to end, through nginx on a local scaled stack (3 replicas, 1 worker each): the cached hit path
against a no-op route of the same app, Redis down and frozen, the cluster's hit ratio on a Zipf workload,
and Redis memory per cached entry. `python -m bench.run e2e`; figures in reports/bench-e2e.json.

The load generator is wrk (C, one thread); it shares the machine with nginx, the replicas and Redis, so
its own CPU time is measured and reported with every window. Ratios compare windows of the same run,
taken in turns (ceiling, hit with Redis up, hit with Redis down) so that drift on a shared machine hits
both sides of a ratio alike; each ratio is the median over the rounds.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from rag_api.config import Settings

from . import _e2e_clients as clients
from . import _e2e_profile as profile
from ._common import REPORTS, verdict, write_report
from ._e2e_load import WrkResult, lua_script, run_wrk
from ._e2e_stack import TENANT, BenchStack, bench_stack

SECONDS = int(os.environ.get("BENCH_E2E_SECONDS", "5"))  # one measured window
ROUNDS = int(os.environ.get("BENCH_E2E_ROUNDS", "3"))
CONNECTIONS = 16
FREEZE_SECONDS = 10
HOT_TEXT = "hello"
HOT_SET = [f"hot set text {i}" for i in range(64)]
ZIPF = {"requests": 3000, "texts": 500, "s": 1.1, "seed": 20240601}
ZIPF_CONCURRENCY = 8
JSON_HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {TENANT}"}


def _body(text: str) -> str:
    return f'{{"model":"{clients.MODEL}","input":"{text}","encoding_format":"base64"}}'


CACHED = lua_script("POST", JSON_HEADERS, [_body(HOT_TEXT)])
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is a cached answer?"}]}
CHAT_PLAIN = lua_script("POST", JSON_HEADERS, [json.dumps(CHAT)])
CHAT_STREAM = lua_script("POST", JSON_HEADERS, [json.dumps({**CHAT, "stream": True})])
TTFC_REQUESTS = 200
HOT_SET_SCRIPT = lua_script("POST", JSON_HEADERS, [_body(t) for t in HOT_SET])
# The ceiling: GET /healthz, the app's cheapest route (no auth, no body, a 15-byte answer) behind the same
# nginx, middleware and metrics. It is the strict choice: the hit also reads a body, checks a key and
# sends 8 KB; see the README's Performance section.
CEILING = lua_script("GET", {})


def _counters(urls: Sequence[str]) -> dict[str, int]:
    keys = ("hits", "misses", "memory_hits", "redis_hits")
    every = [clients.stats(u) for u in urls]
    return {k: sum(int(s[k]) for s in every) for k in keys}


def _window(stack: BenchStack, label: str, path: str, script: str, seconds: int = SECONDS) -> dict[str, Any]:
    """One wrk window, with the tier each lookup was served from (the replicas' counters, before and after)."""
    before = _counters(stack.replica_urls)
    result: WrkResult = run_wrk(
        label, stack.url + path, script, seconds=seconds, connections=CONNECTIONS, pids=stack.pids()
    )
    after = _counters(stack.replica_urls)
    figures = result.figures()
    lookups = (after["hits"] - before["hits"]) + (after["misses"] - before["misses"])
    if lookups:
        figures["memory_hit_share"] = round((after["memory_hits"] - before["memory_hits"]) / lookups, 4)
    print(
        f"    {label:<22} {figures['rps']:>8.0f} req/s  p50 {figures['p50_ms']:6.2f} ms  "
        f"p99 {figures['p99_ms']:6.2f} ms  errors {figures['errors']}  wrk CPU {figures['cpu_cores']['wrk']:.2f} core"
    )
    return figures


def _median(rounds: list[dict[str, Any]], label: str, key: str) -> float:
    return float(statistics.median(r[label][key] for r in rounds))


def _ratio(rounds: list[dict[str, Any]], num: str, den: str, key: str) -> float:
    """The median over rounds of num/den for `key`, each from windows of the same round."""
    return round(float(statistics.median(r[num][key] / r[den][key] for r in rounds)), 3)


def throughput(stack: BenchStack) -> dict[str, Any]:
    """ROUNDS rounds of: ceiling, cached hit (Redis up), cached hit (Redis killed, memory tier only)."""
    urls = stack.replica_urls
    rounds: list[dict[str, Any]] = []
    for n in range(1, ROUNDS + 1):
        print(f"  round {n}/{ROUNDS}")
        clients.wait_coherent(urls)
        clients.warm(urls, [HOT_TEXT], rounds=2)
        one: dict[str, Any] = {"ceiling": _window(stack, "ceiling GET /healthz", "/healthz", CEILING)}
        one["up"] = _window(stack, "hit, Redis up", "/v1/embeddings", CACHED)
        stack.redis_kill()
        try:
            clients.wait_breaker_open(urls, HOT_TEXT)
            one["down"] = _window(stack, "hit, Redis down", "/v1/embeddings", CACHED)
        finally:
            stack.redis_start()
        rounds.append(one)
    clients.wait_coherent(urls)
    summary = {
        label: {k: _median(rounds, label, k) for k in ("rps", "p50_ms", "p99_ms")}
        for label in ("ceiling", "up", "down")
    }
    return {
        "rounds": rounds,
        "median": summary,
        "hit_vs_ceiling": {
            "throughput": _ratio(rounds, "up", "ceiling", "rps"),
            "p50": _ratio(rounds, "ceiling", "up", "p50_ms"),
            "p99": _ratio(rounds, "ceiling", "up", "p99_ms"),
        },
        "redis_down_vs_up": {
            "throughput": _ratio(rounds, "down", "up", "rps"),
            "p99": _ratio(rounds, "down", "up", "p99_ms"),
        },
    }


def streaming(stack: BenchStack) -> dict[str, Any]:
    """The same cached chat answer asked plainly and streamed (a replay as SSE): throughput side by side, and
    the time to the first content chunk of a cached stream (httpx, one request at a time)."""
    clients.wait_coherent(stack.replica_urls)
    for url in stack.replica_urls:  # cached on every replica, the plain answer serving the streamed one too
        for _ in range(2):
            httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=JSON_HEADERS, timeout=30).raise_for_status()
    plain = _window(stack, "chat hit, plain", "/v1/chat/completions", CHAT_PLAIN)
    streamed = _window(stack, "chat hit, streamed", "/v1/chat/completions", CHAT_STREAM)
    firsts: list[float] = []
    with httpx.Client(timeout=30) as client:
        for _ in range(TTFC_REQUESTS):
            started = time.perf_counter()
            with client.stream(
                "POST", f"{stack.url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=JSON_HEADERS
            ) as res:
                assert res.headers["x-cache"] == "HIT", res.headers
                first = None
                for line in res.iter_lines():  # read to the end: the next request reuses the connection
                    if first is None and '"content":"' in line and '"content":""' not in line:
                        first = time.perf_counter() - started
                assert first is not None, "no content chunk in the replay"
                firsts.append(first)
    ordered = sorted(firsts)
    ttfc = {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
        "requests": len(ordered),
    }
    print(f"    cached stream, time to first content chunk: median {ttfc['median_ms']} ms, p99 {ttfc['p99_ms']} ms")
    return {
        "plain": plain,
        "streamed": streamed,
        "streamed_vs_plain_throughput": round(streamed["rps"] / plain["rps"], 3),
        "ttfc": ttfc,
    }


def _with_miss_probe(stack: BenchStack, tag: str, window: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `window` while a side client sends a few misses (which need Redis); both sets of figures."""
    stop = threading.Event()
    probe: dict[str, Any] = {}
    side = threading.Thread(target=lambda: probe.update(clients.miss_probe(stack.url, stop, tag=tag)))
    side.start()
    try:
        figures = window()
    finally:
        stop.set()
        side.join()
    figures["misses_meanwhile"] = probe
    return figures


def frozen(stack: BenchStack) -> dict[str, Any]:
    """A warm window, then a window with Redis stopped (SIGSTOP) throughout. wrk sends a hot set that every
    tier holds; a side client sends a few misses, which need Redis, in both windows."""
    clients.wait_coherent(stack.replica_urls)
    clients.warm(stack.replica_urls, HOT_SET, rounds=2)

    def window(label: str) -> Callable[[], dict[str, Any]]:
        return lambda: _window(stack, label, "/v1/embeddings", HOT_SET_SCRIPT, FREEZE_SECONDS)

    warm = _with_miss_probe(stack, "warm", window("hot set, warm"))
    stack.redis_signal(signal.SIGSTOP)
    try:
        stopped = _with_miss_probe(stack, "frozen", window("hot set, Redis frozen"))
    finally:
        stack.redis_signal(signal.SIGCONT)
    for label, fig in (("warm", warm), ("frozen", stopped)):
        m = fig["misses_meanwhile"]
        print(f"      misses meanwhile ({label}): {m['requests']}, median {m['median_ms']} ms, max {m['max_ms']} ms, "
              f"{m['answers']}")  # fmt: skip
    clients.wait_coherent(stack.replica_urls)
    return {"warm": warm, "frozen": stopped, "p99_increase_ms": round(stopped["p99_ms"] - warm["p99_ms"], 3)}


def zipf(url: str) -> dict[str, Any]:
    sequence = clients.zipf_sequence(**ZIPF)  # type: ignore[arg-type]
    return clients.zipf_hit_ratio(url, sequence, concurrency=ZIPF_CONCURRENCY, tag="zipf")


def hit_path_profile(stack: BenchStack, seconds: int = 8) -> dict[str, Any]:
    """py-spy on replica 1's worker while wrk sends the hot key through nginx."""
    if profile.py_spy() is None:
        return {"skipped": "py-spy is not installed"}
    worker = stack.workers()[0]
    done: list[WrkResult] = []
    load = threading.Thread(
        target=lambda: done.append(
            run_wrk("profile", stack.url + "/v1/embeddings", CACHED, seconds=seconds + 3, connections=CONNECTIONS)
        )
    )
    load.start()
    folded = REPORTS / "e2e-profile.folded"
    try:
        profile.record(worker, folded, seconds=seconds)
    finally:
        load.join()
    top = profile.top_frames(folded)
    (REPORTS / "e2e-profile-top.txt").write_text(
        profile.render(top, f"py-spy, one API worker, cached /v1/embeddings hits through nginx, {seconds} s")
    )
    return {"worker_pid": worker, "folded": str(folded.relative_to(REPORTS.parent)), "top": top}


def _timed(label: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    print(f"- {label}")
    started = time.monotonic()
    result = step()
    result["seconds_taken"] = round(time.monotonic() - started, 1)
    return result


def verdicts(f: dict[str, Any]) -> bool:
    t = f["throughput"]
    ok = verdict("hit / ceiling, throughput", t["hit_vs_ceiling"]["throughput"], 0.7, "x", lower_is_better=False)
    ok &= verdict("hit / ceiling, p50 (ceiling p50 / hit p50)", t["hit_vs_ceiling"]["p50"], 0.7, "x",
                  lower_is_better=False)  # fmt: skip
    ok &= verdict("hit / ceiling, p99 (ceiling p99 / hit p99)", t["hit_vs_ceiling"]["p99"], 0.7, "x",
                  lower_is_better=False)  # fmt: skip
    ok &= verdict("Redis down / up, throughput", t["redis_down_vs_up"]["throughput"], 0.9, "x", lower_is_better=False)
    ok &= verdict("Redis down / up, p99", t["redis_down_vs_up"]["p99"], 1.5, "x")
    fr = f["redis_frozen"]
    ok &= verdict("Redis frozen 10 s: p99 - warm p99", fr["p99_increase_ms"], fr["allowed_increase_ms"], "ms")
    ok &= verdict("Redis frozen 10 s: failed requests", fr["frozen"]["errors"], 0, "")
    z = f["zipf"]
    ok &= verdict("Zipf hit ratio, cluster / one instance", z["cluster_vs_single"], 0.98, "x", lower_is_better=False)
    return ok


def main() -> bool:
    """Run every end-to-end measurement on stacks of its own; print verdicts, write reports/bench-e2e.json."""
    print(f"e2e bench: wrk -t1 -c{CONNECTIONS}, {SECONDS} s windows x {ROUNDS} rounds, on {os.cpu_count()} CPUs")
    REPORTS.mkdir(exist_ok=True)
    started = time.monotonic()
    figures: dict[str, Any] = {
        "load_generator": f"wrk {CONNECTIONS} connections, 1 thread (its CPU time in each window's cpu_cores.wrk)",
        "ceiling_route": "GET /healthz",
        "hit_request": _body(HOT_TEXT),
    }
    timeout_ms = Settings(_env_file=None).redis_socket_timeout * 1000
    with bench_stack(replicas=3, scaled=True) as stack:
        print(f"  stack: {stack.url} -> {', '.join(stack.replica_urls)}")
        figures["throughput"] = _timed("cached hit vs ceiling, Redis up and down", lambda: throughput(stack))
        figures["streaming"] = _timed("cached chat answer, plain and streamed", lambda: streaming(stack))
        figures["redis_frozen"] = _timed("Redis frozen (SIGSTOP) for 10 s", lambda: frozen(stack))
        figures["redis_frozen"]["allowed_increase_ms"] = timeout_ms
        zipf_cluster = _timed("Zipf workload, 3 replicas behind nginx", lambda: zipf(stack.url))
        figures["redis_memory"] = _timed(
            "Redis memory per entry",
            lambda: clients.redis_memory(
                stack.url, stack.stub_url, stack.info["redis_url"], embeddings=1000, chats=500
            ),
        )
        figures["profile"] = _timed("profile of the hit path (py-spy)", lambda: hit_path_profile(stack))
    with bench_stack(replicas=1, scaled=False) as single:
        zipf_single = _timed("Zipf workload, one instance alone", lambda: zipf(single.url))
    figures["zipf"] = {
        "workload": {**ZIPF, "concurrency": ZIPF_CONCURRENCY},
        "cluster": zipf_cluster,
        "single": zipf_single,
        "cluster_vs_single": round(zipf_cluster["hit_ratio"] / zipf_single["hit_ratio"], 4),
    }
    mem = figures["redis_memory"]
    print(
        f"  Redis memory: {mem['bytes_per_embedding']} B per 1536-d embedding, "
        f"{mem['bytes_per_chat_completion']} B per 2 KB chat completion"
    )
    passed = verdicts(figures)
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"  -> {write_report('e2e', {**figures, 'passed': passed})} ({figures['seconds']} s)")
    return passed
