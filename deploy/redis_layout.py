"""The local runtime's Redis topologies (`REDIS_TOPOLOGY=standalone|sentinel|cluster`) from Debian's redis-server
and redis-sentinel: ports, the supervisord programs' arguments, the API's settings, readiness, cluster creation,
and which program is the primary now (what `make redis-kill` kills).

Ports follow the stack's Redis port P (`STACK_REDIS_PORT`, 6379):
- standalone: one Redis on P;
- sentinel: the first primary on P (program `redis`), its replica on P+1, three sentinels on P+20000..P+20002
  (26379.. for P = 6379), quorum 2, `down-after-milliseconds` 2000;
- cluster: six nodes on P..P+5 (programs `redis`, `redis-2` ... `redis-6`; bus ports +10000,
  `cluster-node-timeout` 2000), made into three primaries with one replica each by `redis-cli --cluster create`
  once every node answers (and never again while the cluster is `ok`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("standalone", "sentinel", "cluster")
MASTER = "mymaster"
NODE_TIMEOUT_MS = 2000
SENTINEL_OFFSET = 20000


def _ask(port: int, password: str, *command: str) -> object:
    """One command to 127.0.0.1:`port`, or None when it does not answer. Only the local runtime asks (it runs
    in the venv); the Docker path uses this module's names and ports alone, on the standard library."""
    import redis

    client: Any = redis.Redis(port=port, password=password or None, socket_timeout=1, socket_connect_timeout=0.5)
    try:
        with client as c:
            return c.execute_command(*command)
    except (redis.RedisError, OSError):
        return None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class RedisLayout:
    kind: str
    port: int
    run_dir: Path
    password: str = field(default="", repr=False)  # the stack's (deploy.topology.ensure_redis_password)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"REDIS_TOPOLOGY must be one of {', '.join(KINDS)}, not {self.kind!r}")
        highest = max([*self.nodes.values(), *self.sentinels.values()]) + (10000 if self.kind == "cluster" else 0)
        if highest > 65535:  # a cluster node's bus listens on its port + 10000
            raise ValueError(f"STACK_REDIS_PORT {self.port} is too high for REDIS_TOPOLOGY={self.kind}")

    @property
    def nodes(self) -> dict[str, int]:
        """The redis-server programs and their ports; `redis` first (the first primary)."""
        if self.kind == "sentinel":
            return {"redis": self.port, "redis-replica": self.port + 1}
        if self.kind == "cluster":
            return {"redis" if i == 0 else f"redis-{i + 1}": self.port + i for i in range(6)}
        return {"redis": self.port}

    @property
    def sentinels(self) -> dict[str, int]:
        if self.kind != "sentinel":
            return {}
        return {f"sentinel-{i + 1}": self.port + SENTINEL_OFFSET + i for i in range(3)}

    def node_dir(self, name: str) -> Path:
        return self.run_dir / ("redis" if name == "redis" else name)

    @property
    def auth_conf(self) -> Path:
        """The nodes' shared config file (requirepass, masterauth): mode 0600, never on a command line."""
        return self.run_dir / "redis" / "redis.conf"

    def node_args(self, name: str) -> list[str]:
        """What a node adds to the standalone redis-server arguments."""
        if self.kind == "sentinel" and name == "redis-replica":
            return ["--replicaof", "127.0.0.1", str(self.port)]
        if self.kind == "cluster":
            return [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.node_dir(name) / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            ]  # fmt: skip
        return []

    def sentinel_command(self, name: str) -> list[str]:
        binary = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
        return [binary, str(self.node_dir(name) / "sentinel.conf")]

    def api_env(self) -> dict[str, str]:
        """The settings every API replica gets for this topology (standalone: its REDIS_URL carries the password)."""
        auth = {"REDIS_PASSWORD": self.password} if self.password else {}
        if self.kind == "sentinel":
            return {
                "REDIS_MODE": "sentinel",
                "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinels.values()),
                "REDIS_SENTINEL_MASTER": MASTER,
                **auth,
            }
        if self.kind == "cluster":
            nodes = ",".join(f"127.0.0.1:{p}" for p in self.nodes.values())
            return {"REDIS_MODE": "cluster", "REDIS_CLUSTER_NODES": nodes, **auth}
        return {"REDIS_MODE": "standalone"}

    def prepare(self) -> None:
        """Directories for every node; the nodes' password file; a fresh config file for each sentinel (it
        rewrites its own), all mode 0600: they hold the password."""
        for name in (*self.nodes, *self.sentinels):
            self.node_dir(name).mkdir(parents=True, exist_ok=True)
        auth = f'requirepass "{self.password}"\nmasterauth "{self.password}"\n' if self.password else ""
        _private(self.auth_conf, auth)
        for name, port in self.sentinels.items():
            _private(
                self.node_dir(name) / "sentinel.conf",
                f"port {port}\nbind 127.0.0.1\ndir {self.node_dir(name)}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.port} 2\n"
                + (f'sentinel auth-pass {MASTER} "{self.password}"\n' if self.password else "")
                + f"sentinel down-after-milliseconds {MASTER} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {MASTER} 10000\n",
            )

    # ----- at run time ----------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Usable: standalone answers; sentinels with a quorum that know the replica, the replica in sync; a
        cluster `ok` on every node, each replica in sync."""
        if self.kind == "cluster":
            self.create_cluster()
            if not all(
                b"cluster_state:ok" in _as_bytes(_ask(port, self.password, "CLUSTER", "INFO"))
                for port in self.nodes.values()
            ):
                return False
            # Each replica in sync: one that never finished its first sync refuses to take over its primary.
            roles = [_as_bytes(_ask(port, self.password, "INFO", "replication")) for port in self.nodes.values()]
            replicas = [role for role in roles if b"role:slave" in role]
            return len(replicas) == len(roles) // 2 and all(b"master_link_status:up" in role for role in replicas)
        if self.kind == "sentinel":
            # Each sentinel must know the replica too: one that learns of it only from a primary already dead
            # has no replica to promote.
            ready = all(
                _ok(_ask(p, "", "SENTINEL", "CKQUORUM", MASTER)) and _ask(p, "", "SENTINEL", "REPLICAS", MASTER)
                for p in self.sentinels.values()
            )
            return ready and b"master_link_status:up" in _as_bytes(
                _ask(self.port + 1, self.password, "INFO", "replication")
            )
        return _ask(self.port, self.password, "PING") in (True, b"PONG", "PONG")

    def create_cluster(self) -> None:
        """`redis-cli --cluster create` once every node answers, unless the nodes already form a cluster."""
        infos = [_as_bytes(_ask(port, self.password, "CLUSTER", "INFO")) for port in self.nodes.values()]
        if not all(infos) or any(b"cluster_known_nodes:1\r" not in info for info in infos):
            return  # a node is not up yet, or the cluster exists already
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        addresses = [f"127.0.0.1:{port}" for port in self.nodes.values()]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            env={**os.environ, "REDISCLI_AUTH": self.password},  # not `-a`: `ps` would show it
            check=True,
            capture_output=True,
            timeout=60,
        )

    def primary(self) -> str:
        """The program serving as primary now (sentinel: as the sentinels say; cluster: `redis` while it is a
        primary, else the first node that is)."""
        if self.kind == "sentinel":
            for port in self.sentinels.values():
                address = _ask(port, "", "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                if isinstance(address, list | tuple) and address:
                    by_port = {p: name for name, p in self.nodes.items()}
                    return by_port[int(_text(address[1]))]
        if self.kind == "cluster":
            for name, port in self.nodes.items():
                if b"role:master" in _as_bytes(_ask(port, self.password, "INFO", "replication")):
                    return name
        return "redis"


def _private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def _ok(value: object) -> bool:
    """A `+OK ...` reply, as text or as redis-py's parsed True."""
    return value is True or _text(value).startswith("OK")


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):  # redis-py parsed INFO into a mapping
        return "\r\n".join(f"{k}:{v}" for k, v in value.items()).encode() + b"\r\n"
    return b""
