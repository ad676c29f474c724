#!/usr/bin/env python3
"""The CLI behind the make targets: bring the stack up and down, inspect it, and break Redis or a replica.

deploy/stack.py [--runtime auto|docker|local] up [--scaled] [--replicas N]
deploy/stack.py down | ps | logs | redis-stop | redis-kill | redis-start | replica-kill [--index I]
deploy/stack.py info --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: make the `deploy` package importable

from deploy.docker import DockerRuntime, engine_answers  # noqa: E402
from deploy.local import LocalRuntime, show_logs_and_fail  # noqa: E402
from deploy.readiness import NotReady  # noqa: E402
from deploy.redis_layout import KINDS  # noqa: E402
from deploy.topology import Topology, default_ports  # noqa: E402

COMMANDS = ("up", "down", "ps", "logs", "redis-stop", "redis-kill", "redis-start", "replica-kill", "info")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ports = default_ports()
    p = argparse.ArgumentParser(prog="stack.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runtime", choices=("auto", "docker", "local"), default=os.environ.get("RUNTIME", "auto"))
    p.add_argument("--run-dir", type=Path, default=Path(os.environ.get("STACK_RUN_DIR", ROOT / ".run")))
    p.add_argument("--env-file", type=Path, default=ROOT / ".env", help="Settings for the API (default .env)")
    for name, default in ports.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=default, dest=name)
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("--scaled", action="store_true", help="up: replicas behind nginx")
    p.add_argument(
        "--redis-topology",
        choices=KINDS,
        default=os.environ.get("REDIS_TOPOLOGY") or "standalone",
        help="up: one Redis, a primary + replica + 3 sentinels, or a 3x2 cluster (README: Outgrowing one Redis)",
    )
    p.add_argument("--replicas", type=int, default=int(os.environ.get("REPLICAS", "1")))
    p.add_argument("--workers", type=int, default=None, help="up: gunicorn workers per replica (local)")
    p.add_argument("--timeout", type=float, default=120.0, help="up: seconds to wait for readiness")
    p.add_argument("--index", type=int, default=1, help="replica-kill: which replica (1-based)")
    p.add_argument("--lines", type=int, default=50, help="logs: lines per log")
    p.add_argument("--json", action="store_true", help="info: print JSON")
    args = p.parse_args(argv)
    if args.replicas < 1 or (args.replicas > 1 and not args.scaled and args.command == "up"):
        p.error("--replicas N > 1 needs --scaled (a single API has one replica)")
    args.run_dir = args.run_dir.resolve()
    return args


def choose(args: argparse.Namespace) -> tuple[Topology, str]:
    """The topology to act on and why that runtime: the one already up, else the flag, else auto."""
    saved = Topology.load(args.run_dir)
    if args.command != "up" and saved and args.runtime in ("auto", saved.runtime):
        return saved, f"the stack that is up, from {args.run_dir / 'stack.json'}"
    runtime, why = args.runtime, "--runtime/RUNTIME"
    if runtime == "auto":
        runtime = "docker" if engine_answers() else "local"
        why = "auto: a Docker engine answered" if runtime == "docker" else "auto: no Docker engine answered"
    ports = {name: getattr(args, name) for name in default_ports()}
    topology = Topology(
        runtime=runtime,
        run_dir=args.run_dir,
        scaled=args.scaled,
        replicas=args.replicas,
        workers=args.workers,
        env_file=args.env_file.resolve(),
        redis_topology=args.redis_topology,
        **ports,
    )
    return topology, why


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    topology, why = choose(args)
    print(f"[stack] runtime: {topology.runtime} ({why})", file=sys.stderr)
    runtime = LocalRuntime(topology) if topology.runtime == "local" else DockerRuntime(topology)
    command = args.command
    if command == "up":
        try:
            runtime.up(args.timeout)
        except NotReady as error:
            if isinstance(runtime, LocalRuntime):
                show_logs_and_fail(runtime, error)
            print(runtime.logs(30), file=sys.stderr)
            raise SystemExit(f"not ready: {error}") from None
        info = topology.info()
        print(f"[stack] ready: API at {info['api_url']} ({topology.replicas} replica(s)), stub at {info['stub_url']}")
    elif command == "down":
        runtime.down()
        print("[stack] down")
    elif command == "ps":
        print(runtime.ps())
    elif command == "logs":
        print(runtime.logs(args.lines))
    elif command == "redis-stop":
        print(f"[stack] Redis primary {runtime.redis_stop()} stopped (SIGTERM)")
    elif command == "redis-kill":
        name = runtime.redis_kill()
        print(f"[stack] Redis primary {name} killed (SIGKILL); `make redis-start` brings it back")
    elif command == "redis-start":
        runtime.redis_start()
        print("[stack] Redis started and answering")
    elif command == "replica-kill":
        print(f"[stack] {runtime.replica_kill(args.index)}")
    elif command == "info":
        info = topology.info()
        print(json.dumps(info) if args.json else "\n".join(f"{k}: {v}" for k, v in info.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
