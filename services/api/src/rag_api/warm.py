"""Cache warming: `python -m rag_api.warm FILE --school N` (`make warm FILE=... SCHOOL=...`).

Reads a JSONL file (a line is a string or `{"input": ...}` for embeddings, `{"messages": [...]}` for a chat
completion; `model` optional on both) and sends it through the API: embedding inputs in batches, with bounded
concurrency and rate. What is already cached is answered by the cache, never the model, and counted from the
answer's `X-Cache-Hits` / `X-Cache`. Finished batches are recorded in a small state file, so a run that was
interrupted resumes where it stopped; a changed file or batch size starts over.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import orjson

__all__ = ["Job", "Summary", "jobs_from_lines", "main", "run"]

EMBEDDING_MODEL = "text-embedding-3-small"
CHAT_MODEL = "gpt-4o-mini"
_RETRY_STATUSES = {429, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class Job:
    """One request: `items` embedding inputs (or 1 for a chat completion)."""

    number: int
    route: str
    body: dict[str, Any]
    items: int


@dataclass(slots=True)
class Summary:
    total: int = 0  # items in the file
    resumed: int = 0  # items done by an earlier, interrupted run
    sent: int = 0  # items sent in this run
    cached: int = 0  # ... already in the cache
    computed: int = 0  # ... computed by the model now
    failed: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class State:
    """What the state file holds: which file and settings it is about, and the jobs already done."""

    digest: str
    school: int
    batch: int
    done: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        data = {**asdict(self), "done": sorted(self.done)}
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, path)  # atomic: a kill never leaves half a file

    @classmethod
    def load(cls, path: Path, digest: str, school: int, batch: int) -> State:
        fresh = cls(digest, school, batch)
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return fresh
        if (data.get("digest"), data.get("school"), data.get("batch")) != (digest, school, batch):
            return fresh
        return cls(digest, school, batch, set(data.get("done", ())), dict(data.get("counts", {})))


def jobs_from_lines(lines: Iterator[bytes], *, batch: int, embedding_model: str, chat_model: str) -> list[Job]:
    """Requests from JSONL lines: consecutive embedding inputs of one model share a request of up to
    `batch` inputs; each chat request is its own. Raises ValueError naming the line of a malformed one."""
    jobs: list[Job] = []
    pending: list[Any] = []
    pending_model = embedding_model

    def flush() -> None:
        if pending:
            body = {"model": pending_model, "input": list(pending)}
            jobs.append(Job(len(jobs), "/v1/embeddings", body, len(pending)))
            pending.clear()

    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"line {number}: not JSON ({exc})") from None
        if isinstance(line, dict) and "messages" in line:
            flush()
            jobs.append(Job(len(jobs), "/v1/chat/completions", {"model": chat_model, **line}, 1))
            continue
        model = line.get("model", embedding_model) if isinstance(line, dict) else embedding_model
        value = line.get("input") if isinstance(line, dict) else line
        inputs = value if isinstance(value, list) and all(isinstance(v, str) for v in value) else [value]
        if not all(isinstance(v, str) and v for v in inputs):
            raise ValueError(f"line {number}: expected a string, {{'input': ...}} or {{'messages': [...]}}")
        if model != pending_model:
            flush()
            pending_model = model
        for text in inputs:
            pending.append(text)
            if len(pending) >= batch:
                flush()
    flush()
    return jobs


class Progress:
    """A one-line progress bar on stderr (redrawn at most 10 times a second; every 10% when not a terminal)."""

    def __init__(self, total: int, *, stream: Any = sys.stderr) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.tty = stream.isatty()
        self._drawn = 0.0
        self._decile = -1
        self._last = ""

    def update(self, summary: Summary, *, final: bool = False) -> None:
        done = summary.resumed + summary.sent
        now = time.monotonic()
        decile = done * 10 // self.total
        if not final and (now - self._drawn < 0.1 if self.tty else decile == self._decile):
            return
        self._drawn, self._decile = now, decile
        filled = done * 30 // self.total
        line = (
            f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{summary.total} "
            f"cached={summary.cached} computed={summary.computed} failed={summary.failed}"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        elif line != self._last:  # the final line repeats the 100% one when nothing changed since
            self.stream.write(line + "\n")
        self._last = line
        self.stream.flush()


async def run(
    jobs: list[Job],
    *,
    client: httpx2.AsyncClient,
    headers: dict[str, str],
    state: State,
    state_path: Path,
    concurrency: int,
    rate: float,
    progress: Progress | None = None,
) -> Summary:
    """Send every job not yet done, at most `concurrency` at once and `rate` per second; returns the figures."""
    summary = Summary(total=sum(j.items for j in jobs))
    summary.resumed = sum(j.items for j in jobs if j.number in state.done)
    todo = [j for j in jobs if j.number not in state.done]
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in todo:
        queue.put_nowait(job)
    interval = 1.0 / rate if rate > 0 else 0.0
    next_start = time.monotonic()
    gate = asyncio.Lock()

    async def paced() -> None:
        nonlocal next_start
        async with gate:
            wait = next_start - time.monotonic()
            next_start = max(next_start, time.monotonic()) + interval
        if wait > 0:
            await asyncio.sleep(wait)

    async def worker() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            cached = await _send(job, client, headers, paced)
            summary.sent += job.items
            if cached is None:
                summary.failed += job.items
            else:
                summary.cached += cached
                summary.computed += job.items - cached
                state.done.add(job.number)
                state.save(state_path)
            if progress is not None:
                progress.update(summary)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    summary.seconds = round(time.monotonic() - started, 2)
    if progress is not None:
        progress.update(summary, final=True)
    return summary


async def _send(job: Job, client: httpx2.AsyncClient, headers: dict[str, str], paced: Any) -> int | None:
    """How many of the job's items the cache already held, or None when it failed (after retries)."""
    for attempt in range(4):
        await paced()
        try:
            response = await client.post(job.route, json=job.body, headers=headers)
        except httpx2.HTTPError:
            response = None
        if response is not None and response.status_code == 200:
            hits = response.headers.get("x-cache-hits")
            if hits and "/" in hits:
                return int(hits.split("/", 1)[0])
            return job.items if response.headers.get("x-cache") == "HIT" else 0
        if response is not None and response.status_code not in _RETRY_STATUSES:
            return None
        await asyncio.sleep(0.2 * 2**attempt)
    return None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _default_key() -> str:
    """WARM_API_KEY or ADMIN_API_KEY from the environment or `.env` (as the API reads it), else the demo key."""
    key = os.environ.get("WARM_API_KEY") or os.environ.get("ADMIN_API_KEY")
    if key:
        return key
    try:
        lines = Path(".env").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() == "ADMIN_API_KEY" and value.strip():
            return value.strip().strip("'\"")
    return "demo-admin"


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m rag_api.warm", description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path, help="JSONL: strings or {'input': ...} (embeddings), {'messages': [...]}")
    p.add_argument("--school", type=int, required=True, help="the school whose cache is warmed")
    nginx = f"http://127.0.0.1:{env('STACK_NGINX_PORT', '8080')}"
    p.add_argument("--url", default=env("WARM_URL", nginx), help="the API (default: the scaled stack's nginx)")
    p.add_argument("--key", default=_default_key(), help="API key (default: ADMIN_API_KEY, from .env too)")
    p.add_argument("--batch", type=int, default=64, help="embedding inputs per request")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    p.add_argument("--rate", type=float, default=20.0, help="requests started per second (0: unlimited)")
    p.add_argument("--embedding-model", default=EMBEDDING_MODEL, help="for lines that name no model")
    p.add_argument("--chat-model", default=CHAT_MODEL, help="for chat lines that name no model")
    p.add_argument("--state", type=Path, help="state file (default .run/warm/<file>-school<N>.json)")
    p.add_argument("--restart", action="store_true", help="ignore the state of an earlier run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.batch < 1 or args.concurrency < 1 or args.rate < 0 or args.school < 1:
        print("warm: --batch, --concurrency and --school must be positive, --rate >= 0", file=sys.stderr)
        return 2
    try:
        with args.file.open("rb") as lines:
            jobs = jobs_from_lines(
                iter(lines), batch=args.batch, embedding_model=args.embedding_model, chat_model=args.chat_model
            )
        digest = _digest(args.file)
    except (OSError, ValueError) as exc:
        print(f"warm: {args.file}: {exc}", file=sys.stderr)
        return 2
    state_path = args.state or Path(".run") / "warm" / f"{args.file.stem}-school{args.school}.json"
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state = State(digest, args.school, args.batch)
    if not args.restart:
        state = State.load(state_path, digest, args.school, args.batch)
    headers = {"Authorization": f"Bearer {args.key}", "X-School-Id": str(args.school)}

    async def go() -> Summary:
        async with httpx2.AsyncClient(base_url=args.url, timeout=60.0) as client:
            return await run(
                jobs,
                client=client,
                headers=headers,
                state=state,
                state_path=state_path,
                concurrency=args.concurrency,
                rate=args.rate,
                progress=Progress(sum(j.items for j in jobs)),
            )

    try:
        summary = asyncio.run(go())
    except KeyboardInterrupt:
        print(f"\nwarm: interrupted; run the same command again to resume ({state_path})", file=sys.stderr)
        return 130
    print(
        f"warm: {summary.total} items for school {args.school}: {summary.resumed} done by an earlier run, "
        f"{summary.sent} sent now ({summary.cached} already cached, {summary.computed} computed, "
        f"{summary.failed} failed) in {summary.seconds} s; state {state_path}"
    )
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
