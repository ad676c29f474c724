"""Streamed chat completions through nginx on the local scaled stack (3 replicas), with the official SDK:
relayed as they arrive, replayed from the cache, one entry for both forms, and one upstream stream for
identical requests in flight on every replica."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
import xmlrpc.client
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from supervisor.xmlrpc import SupervisorTransport

from tests.support.stack import LocalStack, descendants
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

KEYS = {123: "demo-school-123", 456: "demo-school-456"}
ENV = {"STUB_LATENCY_MS": "50", "STUB_DIM": "8", "REQUEST_TIMEOUT": "20", "CACHE_LEASE_WAIT": "15",
       "UPSTREAM_TIMEOUT": "10", "CACHE_LEASE_TTL": "1"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("streaming"), 3, env=ENV).running() as local:
        yield local


@pytest.fixture(scope="module")
def info(stack: LocalStack) -> dict[str, Any]:
    return stack.info()


@pytest.fixture(autouse=True)
def healthy_stub(info: dict[str, Any]) -> Iterator[None]:
    control(info, stream_chunks=8, chunk_delay_ms=0, abort_after_chunks=0, latency_ms=50, fail_status=0)
    yield
    control(info, stream_chunks=8, chunk_delay_ms=0, abort_after_chunks=0, latency_ms=50, fail_status=0)


def control(info: dict[str, Any], **knobs: float) -> None:
    httpx.post(f"{info['stub_url']}/control", json=knobs, timeout=5).raise_for_status()


def stub_stats(info: dict[str, Any]) -> dict[str, int]:
    return dict(httpx.get(f"{info['stub_url']}/stats", timeout=5).json())


def client(info: dict[str, Any], school: int = 123) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEYS[school], base_url=f"{info['nginx_url']}/v1", max_retries=0, timeout=30)


def aclient(info: dict[str, Any], school: int = 123) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=KEYS[school], base_url=f"{info['nginx_url']}/v1", max_retries=0, timeout=30)


def kill_replica(stack: LocalStack, index: int) -> None:
    """SIGKILL a replica's gunicorn master and workers at once (supervisord starts it again)."""
    transport = SupervisorTransport(None, None, f"unix://{stack.run_dir / 'supervisor.sock'}")
    rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor
    for pid in descendants(int(rpc.getProcessInfo(f"api:api-{index + 1}")["pid"])):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def messages(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def read(stream: Any) -> tuple[str, float | None, int]:
    """The text of a stream, when its first content chunk came (perf_counter), and its chunk count."""
    text, first, count = "", None, 0
    for chunk in stream:
        count += 1
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text += chunk.choices[0].delta.content
    return text, first, count


def test_a_miss_is_relayed_as_it_arrives_then_replayed_and_served_to_both_forms(info: dict[str, Any]) -> None:
    """MISS: the first chunk arrives at about the stub's first-chunk delay, not its total time; then the same
    request streamed is a HIT replaying the same text, and without `stream` a HIT too; one upstream stream."""
    control(info, stream_chunks=6, chunk_delay_ms=250)
    sdk, msgs = client(info), messages(f"relay {uuid.uuid4()}")
    before = stub_stats(info)
    started = time.perf_counter()
    raw = sdk.chat.completions.with_raw_response.create(model="g", messages=msgs, stream=True)
    assert (raw.headers["x-cache"], raw.headers["x-cache-stream"]) == ("MISS", "leader")
    text, first, _ = read(raw.parse())
    total = time.perf_counter() - started
    assert first is not None
    assert first - started < 0.6  # 50 ms to the first chunk, then 6 x 250 ms for the rest
    assert total > 1.2
    hit = sdk.chat.completions.with_raw_response.create(model="g", messages=msgs, stream=True)
    assert (hit.headers["x-cache"], hit.headers["x-cache-stream"]) == ("HIT", "replay")
    assert read(hit.parse())[0] == text
    plain = sdk.chat.completions.with_raw_response.create(model="g", messages=msgs)
    assert plain.headers["x-cache"] == "HIT"
    assert plain.parse().choices[0].message.content == text
    after = stub_stats(info)
    assert after["chat_streams"] - before["chat_streams"] == 1
    assert after["chat_requests"] == before["chat_requests"]


def test_a_plain_answer_serves_a_stream_and_usage_comes_when_asked(info: dict[str, Any]) -> None:
    """A non-streamed answer is a HIT for the same request streamed; include_usage adds the usage chunk."""
    sdk, msgs = client(info), messages(f"plain first {uuid.uuid4()}")
    answer = sdk.chat.completions.create(model="g", messages=msgs)
    raw = sdk.chat.completions.with_raw_response.create(
        model="g", messages=msgs, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-cache"] == "HIT"
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == answer.usage.total_tokens  # type: ignore[union-attr]
    assert all(c.usage is None for c in client(info).chat.completions.create(model="g", messages=msgs, stream=True))


def test_schools_do_not_share_streams(info: dict[str, Any]) -> None:
    """The same streamed request of another school is its own MISS."""
    msgs = messages(f"tenants {uuid.uuid4()}")
    read(client(info, 123).chat.completions.create(model="g", messages=msgs, stream=True))
    other = client(info, 456).chat.completions.with_raw_response.create(model="g", messages=msgs, stream=True)
    assert other.headers["x-cache"] == "MISS"
    read(other.parse())


def test_an_aborted_upstream_stream_is_not_cached(info: dict[str, Any]) -> None:
    """The model breaks the stream off: the client gets an error event, and nothing is stored."""
    control(info, abort_after_chunks=3)
    sdk, msgs = client(info), messages(f"abort {uuid.uuid4()}")
    with pytest.raises(openai.APIError):
        read(sdk.chat.completions.create(model="g", messages=msgs, stream=True))
    control(info, abort_after_chunks=0)

    def computed_again() -> bool:
        return sdk.chat.completions.with_raw_response.create(model="g", messages=msgs).headers["x-cache"] == "MISS"

    wait_until(computed_again, timeout=10, interval=0.2, what="a MISS once the failure's short memory is over")


async def test_fifty_identical_streams_over_three_replicas_share_one_upstream_stream(info: dict[str, Any]) -> None:
    """50 concurrent identical streams (the async SDK) reach all three replicas and cause one upstream
    stream; every client gets the same full answer, and followers' first chunk comes close to the leader's."""
    control(info, stream_chunks=10, chunk_delay_ms=100)
    msgs = messages(f"shared {uuid.uuid4()}")
    before = stub_stats(info)["chat_streams"]
    sdk = aclient(info)
    started = time.perf_counter()

    async def one() -> tuple[str, float, str, str]:
        raw = await sdk.chat.completions.with_raw_response.create(model="g", messages=msgs, stream=True)
        text, first = "", 0.0
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
                text += chunk.choices[0].delta.content
        return text, first, raw.headers["x-instance"], raw.headers["x-cache-stream"]

    results = await asyncio.gather(*(one() for _ in range(50)))
    await sdk.close()
    assert stub_stats(info)["chat_streams"] - before == 1
    assert len({text for text, *_ in results}) == 1
    assert results[0][0]
    assert len({instance for _, _, instance, _ in results}) == 3
    leader = min(first for _, first, _, role in results if role == "leader")
    followers = [first for _, first, _, role in results if role == "follower"]
    assert max(followers) - leader < 0.25, (leader, sorted(followers)[-5:])


async def test_followers_of_a_killed_leader_end_within_the_deadline(stack: LocalStack, info: dict[str, Any]) -> None:
    """The replica producing a stream is SIGKILLed mid-stream: every follower on the other replicas ends (an
    error event, or a whole answer from a replica that took over), none hangs."""
    control(info, stream_chunks=20, chunk_delay_ms=150)
    msgs = messages(f"leader dies {uuid.uuid4()}")
    replicas = info["replica_urls"]
    leader_url, followers = replicas[0], replicas[1:]

    async def stream_from(url: str) -> str:
        sdk = openai.AsyncOpenAI(api_key=KEYS[123], base_url=f"{url}/v1", max_retries=0, timeout=30)
        try:
            out = ""
            async for chunk in await sdk.chat.completions.create(model="g", messages=msgs, stream=True):
                out += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            return "complete"
        except (httpx.HTTPError, openai.APIConnectionError):  # (an APIConnectionError is an APIError too)
            return "connection lost"
        except openai.APIError:
            return "error event"
        finally:
            await sdk.close()

    leader = asyncio.ensure_future(stream_from(leader_url))
    await asyncio.sleep(0.3)  # the leader has begun: followers join its stream
    waiting = [asyncio.ensure_future(stream_from(url)) for url in followers for _ in range(3)]
    await asyncio.sleep(0.5)
    kill_replica(stack, 0)
    started = time.monotonic()
    outcomes = await asyncio.wait_for(asyncio.gather(*waiting), timeout=25)
    assert time.monotonic() - started < 20
    assert set(outcomes) <= {"complete", "error event"}, outcomes
    assert await leader == "connection lost"
