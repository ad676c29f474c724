"""Real Sentinel and Cluster topologies on free 127.0.0.1 ports, each process in its own directory.

`SentinelTopology`: a primary, one replica and three sentinels (quorum 2, `down-after-milliseconds` 1000).
`ClusterTopology`: three primaries with one replica each (`cluster-node-timeout` 1000), created with
`redis-cli --cluster create`. Both can kill the current primary (SIGKILL) and tell when a replica took over.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis
from rag_api.cache import RedisOptions

from .redis_server import RedisServer, redis_server_binary, terminate
from .wait import free_port, wait_until

MASTER = "cache-primary"
NODE_TIMEOUT_MS = 1000


def _sentinel_binary() -> list[str]:
    found = shutil.which("redis-sentinel")
    # redis-sentinel is redis-server started in sentinel mode; the package only adds the name.
    return [found] if found else [redis_server_binary(), "--sentinel"]


class SentinelProcess:
    def __init__(self, workdir: Path, primary_port: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        # Sentinel rewrites its own config file (epochs, known replicas): it must be a writable file of its own.
        (workdir / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\nlogfile {workdir / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {NODE_TIMEOUT_MS}\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*_sentinel_binary(), str(self.workdir / "sentinel.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def master_port(self) -> int | None:
        with self.client() as c:
            addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        return int(addr[1]) if addr else None

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


def _role(port: int) -> str:
    with redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=0.5) as c:
        return str(c.info("replication")["role"])


class SentinelTopology:
    """A primary, a replica and three sentinels; `env()` is what a cache process needs to use them."""

    def __init__(self, workdir: Path) -> None:
        self.primary = RedisServer(workdir / "primary", appendonly=False)
        self.replica = RedisServer(
            workdir / "replica", appendonly=False, extra=["--replicaof", "127.0.0.1", str(self.primary.port)]
        )
        self.sentinels = [SentinelProcess(workdir / f"sentinel{i}", self.primary.port) for i in range(3)]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, self.replica]

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        wait_until(self._replica_synced, timeout=20, what="the replica is in sync with the primary")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._sentinels_ready, timeout=20, what="every sentinel knows the primary, the replica, the peers")

    def _replica_synced(self) -> bool:
        with self.replica.client() as c:
            return c.info("replication").get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as c:
                state = c.execute_command("SENTINEL", "MASTER", MASTER)
                fields = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else state
                fields = {_s(k): _s(v) for k, v in fields.items()}
                if int(fields["num-other-sentinels"]) < 2 or int(fields["num-slaves"]) < 1:
                    return False
        return True

    def env(self) -> dict[str, str]:
        return {
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER,
        }

    def options(self) -> RedisOptions:
        sentinels = tuple(("127.0.0.1", s.port) for s in self.sentinels)
        return RedisOptions(url="", mode="sentinel", sentinels=sentinels, sentinel_master=MASTER)

    def flushall(self) -> None:
        with self.current_primary().client() as c:
            c.flushall()

    def primaries(self) -> list[RedisServer]:
        return [self.current_primary()]

    def current_primary(self) -> RedisServer:
        port = self.sentinels[0].master_port()
        return next(s for s in self.servers if s.port == port)

    def kill_primary(self) -> tuple[RedisServer, RedisServer]:
        """SIGKILL the current primary; returns (killed, the replica expected to take over)."""
        old = self.current_primary()
        new = next(s for s in self.servers if s is not old)
        old.kill()
        return old, new

    def promoted(self, server: RedisServer) -> bool:
        """True once `server` is the primary both for itself and for a sentinel."""
        return _role(server.port) == "master" and self.sentinels[0].master_port() == server.port

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()


_CREATE_OPTIONS = ("--cluster-replicas", "1", "--cluster-yes")


def _cluster_args(workdir: Path) -> list[str]:
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(workdir / "nodes.conf"),
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        # The bus port defaults to port + 10000, past 65535 for many free ports: pick one too.
        "--cluster-port", str(free_port()),
    ]  # fmt: skip


class ClusterTopology:
    """Three primaries with one replica each."""

    def __init__(self, workdir: Path, *, primaries: int = 3) -> None:
        self.nodes = [RedisServer(workdir / f"node{i}", appendonly=False, extra=_cluster_args(workdir / f"node{i}"))
                      for i in range(primaries * 2)]  # fmt: skip

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes), *_CREATE_OPTIONS],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        wait_until(self.ready, timeout=30, what="the cluster is ok on every node, each replica in sync")

    def ready(self) -> bool:
        for node in self.nodes:
            if node.proc is None:
                continue
            with node.client() as c:
                if c.cluster("info")["cluster_state"] != "ok":
                    return False
                info = c.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
        return sum(_role(n.port) == "master" for n in self.nodes if n.proc is not None) == len(self.nodes) // 2

    def env(self) -> dict[str, str]:
        return {"REDIS_MODE": "cluster", "REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)}

    def options(self) -> RedisOptions:
        return RedisOptions(url="", mode="cluster", cluster_nodes=tuple(("127.0.0.1", n.port) for n in self.nodes))

    def flushall(self) -> None:
        for node in self.primaries():
            with node.client() as c:
                c.flushall()

    def primaries(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and _role(n.port) == "master"]

    def slots_of(self, server: RedisServer) -> list[tuple[int, int]]:
        """The slot ranges the primary `server` serves, as it says."""
        with server.client() as c:
            rows = _slot_rows(c.execute_command("CLUSTER SLOTS"))
        return [(first, last) for first, last, addr in rows if addr[1] == server.port]

    def replica_of(self, primary: RedisServer) -> RedisServer:
        for node in self.nodes:
            if node is primary or node.proc is None:
                continue
            with node.client() as c:
                info = c.info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                return node
        raise LookupError(f"no replica of 127.0.0.1:{primary.port}")

    def kill_primary(self, primary: RedisServer | None = None) -> tuple[RedisServer, RedisServer]:
        old = primary or self.primaries()[0]
        new = self.replica_of(old)
        old.kill()
        return old, new

    def promoted(self, server: RedisServer) -> bool:
        with server.client() as c:
            return _role(server.port) == "master" and c.cluster("info")["cluster_state"] == "ok"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _slot_rows(reply: object) -> list[tuple[int, int, tuple[str, int]]]:
    """CLUSTER SLOTS as (first, last, (host, port)) rows, however redis-py parsed it."""
    if isinstance(reply, dict):  # redis-py's callback: {(first, last): {"primary": (host, port), ...}}
        return [(first, last, tuple(v["primary"])) for (first, last), v in reply.items()]  # type: ignore[misc]
    return [(int(r[0]), int(r[1]), (_s(r[2][0]), int(r[2][1]))) for r in reply]  # type: ignore[attr-defined]


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
