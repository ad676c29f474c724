"""Processes read from /proc: the children of a process, its whole tree, and an identity pid reuse cannot fake."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def parents() -> dict[int, list[int]]:
    """Every running process's children, by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(entry.name)) is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    return children


def children(pid: int) -> list[int]:
    """The direct children of `pid`."""
    return parents().get(pid, [])


def descendants(root: int) -> set[int]:
    """`root` and every process below it."""
    tree = parents()
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(tree.get(pid, []))
    return found


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (with the pid, an identity); None when gone or a zombie."""
    stat = _stat(pid)
    return None if stat is None or stat[0] == "Z" else int(stat[19])


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie counts as dead (it only waits for its parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start_time(pid) is not None
