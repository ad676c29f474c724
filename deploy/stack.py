"""The CLI behind the make targets: bring the stack up and down, inspect it, and break Redis or a replica.

python -m deploy.stack [--runtime auto|docker|local] up [--scaled] [--replicas N]
python -m deploy.stack down | ps | logs | redis-stop | redis-kill | redis-start | replica-kill [--index I]
python -m deploy.stack info [--json]     the running stack's URLs (--json: also the keys its API accepts)
python -m deploy.stack which             the runtime `up` would use, and why (on stderr)

The Docker runtime needs the standard library only; the local runtime needs the project's venv.
Exit status: 0 done, 1 the command failed (the logs are printed), 2 the runtime cannot run here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import CommandFailed, NotReady, RuntimeUnavailable, StackError
from .redis_layout import KINDS
from .runtime import Runtime, resolve, runtime_for
from .topology import ROOT, Topology, compose_project, default_ports, redis_maxmemory

COMMANDS = ("up", "down", "ps", "logs", "redis-stop", "redis-kill", "redis-start", "replica-kill", "info", "which")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ports = default_ports()
    p = argparse.ArgumentParser(
        prog="python -m deploy.stack", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
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
    p.add_argument(
        "--monitoring",
        action="store_true",
        default=os.environ.get("MONITORING", "").lower() in ("1", "true", "yes"),
        help="up: also Prometheus, and in Docker Grafana (default: MONITORING=1)",
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
    if args.command not in ("up", "which") and saved and args.runtime in ("auto", saved.runtime):
        return saved, f"the stack that is up, from {args.run_dir / 'stack.json'}"
    runtime, why = resolve(args.runtime)
    ports = {name: getattr(args, name) for name in default_ports()}
    topology = Topology(
        runtime=runtime,
        run_dir=args.run_dir,
        scaled=args.scaled,
        replicas=args.replicas,
        workers=args.workers,
        env_file=args.env_file.resolve(),
        redis_topology=args.redis_topology,
        project=compose_project(args.run_dir, os.environ),
        redis_maxmemory=redis_maxmemory(os.environ),
        monitoring=args.monitoring,
        **ports,
    )
    return topology, why


def info(topology: Topology, as_json: bool) -> str:
    data = topology.info()
    if not as_json:
        return "\n".join(f"{k}: {v}" for k, v in data.items())
    try:
        from .apienv import stack_keys  # needs the venv (the API's Settings parse the keys)
    except ImportError:
        pass
    else:
        data["keys"] = stack_keys(os.environ, topology.env_file)
    return json.dumps(data)


def run(args: argparse.Namespace, topology: Topology, runtime: Runtime) -> str:
    """Carry out one command; returns what to print. Raises StackError."""
    command = args.command
    if command == "up":
        runtime.up(args.timeout)
        data = topology.info()
        ready = f"[stack] ready: API at {data['api_url']} ({topology.replicas} replica(s)), stub at {data['stub_url']}"
        if topology.monitoring:
            ready += f"\n[stack] Prometheus at {data['prometheus_url']}"
            ready += (
                f"\n[stack] Grafana at {data['grafana_url']} (user admin, password in {data['grafana_password_file']})"
                if topology.grafana_url
                else "\n[stack] no Grafana in the local runtime (no Debian package): RUNTIME=docker has it"
            )
        return ready
    if command == "down":
        runtime.down()
        return "[stack] down"
    if command == "ps":
        return runtime.ps()
    if command == "logs":
        return runtime.logs(args.lines)
    if command == "redis-stop":
        return f"[stack] Redis primary {runtime.redis_stop()} stopped (SIGTERM)"
    if command == "redis-kill":
        name = runtime.redis_kill()
        return f"[stack] Redis primary {name} killed (SIGKILL); `make redis-start` brings it back"
    if command == "redis-start":
        runtime.redis_start()
        return "[stack] Redis started and answering"
    if command == "replica-kill":
        return f"[stack] {runtime.replica_kill(args.index)}"
    return info(topology, args.json)


def show_failure(runtime: Runtime, error: StackError) -> None:
    """What a failed `up` leaves to read: the command's own output, the logs and the status of each part."""
    if isinstance(error, CommandFailed) and error.output:
        print(error.output, file=sys.stderr)
    for what in ("logs", "ps"):
        try:
            print(runtime.logs(30) if what == "logs" else runtime.ps(), file=sys.stderr)
        except StackError as exc:  # the logs are a courtesy; the first error is the one to report
            print(f"(could not read the logs: {exc})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """The only place that turns a StackError into a message and an exit status."""
    args = parse(argv)
    try:
        topology, why = choose(args)
        print(f"[stack] runtime: {topology.runtime} ({why})", file=sys.stderr)
        if args.command == "which":  # the Makefile asks before any venv exists
            print(topology.runtime)
            return 0
        runtime = runtime_for(topology)
        print(run(args, topology, runtime))
    except RuntimeUnavailable as error:
        print(f"[stack] {args.command}: {error}", file=sys.stderr)
        return 2
    except (NotReady, CommandFailed) as error:
        if args.command == "up":
            show_failure(runtime, error)
            print(
                f"[stack] not ready: {error}. Left as it is for inspection: `make logs`, `make down`.", file=sys.stderr
            )
        else:
            print(getattr(error, "output", ""), file=sys.stderr)
            print(f"[stack] {args.command} failed: {error}", file=sys.stderr)
        return 1
    except StackError as error:
        print(f"[stack] {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
