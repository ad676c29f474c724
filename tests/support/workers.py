"""Drive several cache_worker processes from a test."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson

from .wait import wait_until


class Worker:
    """One OS process holding one CacheManager; `send` then `recv` (or `call`) one command at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cache_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **env},
        )

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(cmd) + b"\n")
        self.proc.stdin.flush()

    def recv(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.proc.pid} exited ({self.proc.poll()})")
        answer = orjson.loads(line)
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def call(self, **cmd: Any) -> Any:
        self.send(**cmd)
        return self.recv()

    def coherent(self) -> bool:
        return bool(self.call(op="stats")["coherent"])

    def wait_coherent(self, timeout: float = 5.0) -> None:
        wait_until(self.coherent, timeout=timeout, what=f"worker {self.proc.pid} subscribed to invalidations")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
