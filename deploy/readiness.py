"""Waiting for the stack to answer, with deadlines, and showing logs when it does not."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from .errors import NotReady

__all__ = ["NotReady", "answers", "http_get", "redis_answers", "tail", "wait_all_behind_nginx", "wait_for"]


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], *, timeout: float, what: str = "", interval: float = 0.1) -> T:
    """Poll `predicate` until it returns a truthy value (returned), or raise NotReady naming `what` after
    `timeout` seconds. A predicate that raises counts as "not yet", except NotReady, which means "never"."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except NotReady:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise NotReady(f"{what or predicate!r}: not within {timeout:g}s{detail}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, str]]:
    """Status and headers of a GET; connection errors count as status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)
    except (urllib.error.URLError, OSError):
        return 0, {}


def answers(url: str) -> bool:
    return http_get(url)[0] == 200


def redis_answers(port: int, password: str = "") -> bool:
    """PONG from the Redis on 127.0.0.1:`port` (a LOADING or refused connection is not ready)."""
    import redis  # the local runtime's dependency; the Docker path runs on the standard library alone

    try:
        with redis.Redis(port=port, password=password or None, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def wait_all_behind_nginx(nginx_url: str, replicas: int, *, timeout: float) -> set[str]:
    """Send /readyz through nginx until `replicas` distinct upstream addresses answered 200; returns them."""
    seen: set[str] = set()

    def all_seen() -> bool:
        for _ in range(4 * replicas):
            status, headers = http_get(f"{nginx_url}/readyz")
            if status == 200 and headers.get("X-Upstream-Addr"):
                # After a retry nginx lists every address tried; the last one answered.
                seen.add(headers["X-Upstream-Addr"].split(",")[-1].strip())
        return len(seen) >= replicas

    try:
        wait_for(all_seen, timeout=timeout, what="every replica ready through nginx")
    except NotReady as exc:
        raise NotReady(f"{exc} (answered: {sorted(seen) or 'none'})") from None
    return seen


def tail(paths: Iterable[Path], lines: int = 40) -> str:
    """The last `lines` lines of each non-empty file, under a header naming it."""
    out = []
    for path in paths:
        if path.is_file() and path.stat().st_size:
            content = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"==> {path} <==\n" + "\n".join(content))
    return "\n\n".join(out)
