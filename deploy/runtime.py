"""The one interface both runtimes implement, and the choice between them (`RUNTIME=auto|docker|local`)."""

from __future__ import annotations

from typing import Protocol

from .docker import DockerRuntime, docker_unavailable
from .errors import RuntimeUnavailable
from .topology import Topology


class Runtime(Protocol):
    """A stack brought up, inspected, broken and taken down; every method raises a StackError on failure."""

    t: Topology

    def up(self, timeout: float) -> None: ...
    def wait_ready(self, timeout: float) -> None: ...
    def down(self) -> None: ...
    def ps(self) -> str: ...
    def logs(self, lines: int) -> str: ...
    def redis_stop(self) -> str: ...
    def redis_kill(self) -> str: ...
    def redis_start(self, timeout: float = ...) -> None: ...
    def replica_kill(self, index: int) -> str: ...


def resolve(requested: str) -> tuple[str, str]:
    """The runtime to use for `requested` (auto, docker or local) and why, in words for the user."""
    if requested != "auto":
        return requested, "--runtime/RUNTIME"
    why_not = docker_unavailable()
    if why_not is None:
        return "docker", "auto: Docker Engine and Compose are recent enough"
    return "local", f"auto: {why_not}"


def runtime_for(topology: Topology) -> Runtime:
    """The runtime object of `topology`; the local one is imported only when used (it needs the venv)."""
    if topology.runtime == "docker":
        return DockerRuntime(topology)
    try:
        from .local import LocalRuntime
    except ImportError as exc:
        raise RuntimeUnavailable(f"the local runtime needs the project's venv ({exc}): run `make setup`") from exc
    return LocalRuntime(topology)
