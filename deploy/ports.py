"""Free 127.0.0.1 ports for a stack of its own (tests, benchmarks): local replicas use consecutive ports."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def free_port_run(count: int, taken: set[int]) -> int:
    """A first port such that it and the next `count - 1` are free and not in `taken`."""
    for _ in range(50):
        base = free_port()
        ports = set(range(base, base + count))
        if base + count < 65535 and not taken & ports and not any(port_open(p) for p in ports):
            return base
    raise RuntimeError(f"no run of {count} free ports found")


def stack_ports(replicas: int) -> dict[str, int]:
    """Ports for deploy.stack's --nginx-port, --stub-port, --redis-port, --prometheus-port, --grafana-port and
    --api-port (the first replica)."""
    ports = {name: free_port() for name in ("nginx", "stub", "redis", "prometheus", "grafana")}
    ports["api"] = free_port_run(replicas, taken=set(ports.values()))
    return ports
