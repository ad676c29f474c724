"""py-spy on one API worker while wrk drives the hit path: collapsed stacks, and their top frames by self
and by inclusive time, as text for reports/ and the README."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Frames around every sample (the process, the worker's loop): not worth listing as inclusive time. Their
# self time is listed: `Runner.run` running means uvloop's C code (epoll, socket reads and writes).
_OUTER = ("gunicorn/", "<frozen runpy>", "uvicorn_worker/", "uvicorn/_compat.py", "asyncio/runners.py")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, out: Path, *, seconds: int, rate: int = 500) -> None:
    """Sample `pid` for `seconds` without stopping it; collapsed stacks (one `a;b;c count` line each) to `out`."""
    binary = py_spy()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    args = [binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate)]
    args += ["--format", "raw", "--nonblocking", "-o", str(out)]
    subprocess.run(args, check=True, capture_output=True, timeout=seconds + 30)


def _function(frame: str) -> str:
    """`name (path:line)` -> `name (path)`: figures per function rather than per line."""
    head, sep, line = frame.rpartition(":")
    return f"{head})" if sep and line.rstrip(")").isdigit() else frame


def top_frames(folded: Path, *, n: int = 20) -> dict[str, Any]:
    """Share of the samples per function: `self` (it was running) and `inclusive` (it was on the stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_function(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)

    def share(counter: Counter[str], keep: Callable[[str], bool]) -> list[dict[str, Any]]:
        rows = [(f, c) for f, c in counter.most_common() if keep(f)]
        return [{"frame": f, "percent": round(100 * c / total, 1)} for f, c in rows[:n]]

    return {
        "samples": total,
        "self": share(own, lambda f: True),
        "inclusive": share(inclusive, lambda f: not any(o in f for o in _OUTER)),
        "inclusive_ours": share(inclusive, lambda f: "rag_api/" in f),
    }


def render(top: dict[str, Any], title: str) -> str:
    lines = [f"{title} ({top['samples']} samples)", "", "self time (the frame itself was running):"]
    lines += [f"  {r['percent']:5.1f}%  {r['frame']}" for r in top["self"]]
    lines += ["", "inclusive time (the frame was on the stack):"]
    lines += [f"  {r['percent']:5.1f}%  {r['frame']}" for r in top["inclusive"]]
    lines += ["", "inclusive time, the service's own frames (rag_api):"]
    lines += [f"  {r['percent']:5.1f}%  {r['frame']}" for r in top["inclusive_ours"]]
    return "\n".join(lines) + "\n"
