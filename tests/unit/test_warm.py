"""`python -m rag_api.warm`: JSONL to batched requests, cached items skipped, an interrupted run resumed."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from rag_api.warm import Job, Progress, State, jobs_from_lines, main, run

from tests.support.inprocess import Api, open_api
from tests.support.wait import wait_until_async

ADMIN = {"Authorization": "Bearer demo-admin", "X-School-Id": "123"}


def _jobs(n: int, batch: int = 32) -> list[Job]:
    lines = (orjson.dumps({"input": f"passage {i}"}) for i in range(n))
    return jobs_from_lines(iter(lines), batch=batch, embedding_model="m", chat_model="c")


async def _warm(api: Api, jobs: list[Job], state: State, path: Path, **kw: Any) -> Any:
    transport = httpx2.ASGITransport(app=api.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://api") as client:
        return await run(jobs, client=client, headers=ADMIN, state=state, state_path=path, concurrency=4, rate=0, **kw)


def test_lines_become_batched_requests() -> None:
    """Embedding inputs share requests of `batch` per model; chat lines are requests of their own."""
    lines = [b'"a"', b'{"input": ["b", "c"]}', b"", b'{"input": "d", "model": "other"}', b'{"messages": []}', b'"e"']
    jobs = jobs_from_lines(iter(lines), batch=2, embedding_model="m", chat_model="c")
    assert [(j.route, j.body.get("model"), j.items) for j in jobs] == [
        ("/v1/embeddings", "m", 2),
        ("/v1/embeddings", "m", 1),
        ("/v1/embeddings", "other", 1),
        ("/v1/chat/completions", "c", 1),
        ("/v1/embeddings", "m", 1),
    ]
    assert jobs[0].body["input"] == ["a", "b"]
    with pytest.raises(ValueError, match="line 2"):
        jobs_from_lines(iter([b'"ok"', b"{not json"]), batch=2, embedding_model="m", chat_model="c")


async def test_second_run_sends_nothing_upstream(tmp_path: Path) -> None:
    """1,000 inputs: the first run computes them all, a second (fresh state) finds every one cached."""
    jobs = _jobs(1000)
    async with open_api(max_batch_size=64) as api:
        first = await _warm(api, jobs, State("d", 123, 32), tmp_path / "s1.json")
        assert (first.sent, first.computed, first.cached, first.failed) == (1000, 1000, 0, 0)
        assert api.stub.embedding_inputs == 1000
        second = await _warm(api, jobs, State("d", 123, 32), tmp_path / "s2.json")
        assert (second.sent, second.cached, second.computed) == (1000, 1000, 0)
        assert api.stub.embedding_inputs == 1000


async def test_an_interrupted_run_resumes_without_recomputing(tmp_path: Path) -> None:
    """Cancelled halfway, the run resumes from its state file and the model sees each input once."""
    jobs = _jobs(1000)
    path = tmp_path / "state.json"
    async with open_api(max_batch_size=64) as api:
        api.stub.latency_ms = 5
        task = asyncio.create_task(_warm(api, jobs, State("d", 123, 32), path))
        halfway = len(jobs) // 2
        await wait_until_async(
            lambda: asyncio.sleep(0, len(State.load(path, "d", 123, 32).done) >= halfway), timeout=30, what="halfway"
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        state = State.load(path, "d", 123, 32)
        assert 0 < len(state.done) < len(jobs)
        rest = await _warm(api, jobs, state, path, progress=Progress(1000, stream=io.StringIO()))
        assert rest.resumed + rest.sent == 1000
        assert rest.resumed >= 500
        assert rest.failed == 0
        assert api.stub.embedding_inputs == 1000  # in-flight batches of the killed run are cache hits now


def test_state_belongs_to_one_file_school_and_batch(tmp_path: Path) -> None:
    """A state file about another file, school or batch size is ignored."""
    path = tmp_path / "state.json"
    State("d", 1, 8, {1, 2}).save(path)
    assert State.load(path, "d", 1, 8).done == {1, 2}
    assert State.load(path, "other", 1, 8).done == set()
    assert State.load(path, "d", 2, 8).done == set()
    assert State.load(path, "d", 1, 16).done == set()


def test_cli_reports_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line names the file and line of malformed input and exits 2."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{broken\n')
    assert main([str(bad), "--school", "1", "--state", str(tmp_path / "s.json")]) == 2
    assert "line 2" in capsys.readouterr().err
