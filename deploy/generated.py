"""Files generated from Python and committed (nginx/docker.conf, the Prometheus and Grafana files): write them,
or check that the committed copy is current."""

from __future__ import annotations

import sys
from pathlib import Path

from .topology import ROOT


def write_or_check(path: Path, text: str, *, command: str, check: bool) -> int:
    """With `check`, 1 (and a message naming `command`) when `path` differs from `text`; else write it."""
    name = path.relative_to(ROOT)
    if check:
        if not path.exists() or path.read_text() != text:
            print(f"{name} is stale: run {command}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {name}")
    return 0
