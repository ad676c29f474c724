"""supervisord.conf for the local runtime: Redis (AOF), the stub, N gunicorn replicas and nginx on 127.0.0.1."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from .errors import RuntimeUnavailable
from .topology import ROOT, Topology

GUNICORN_CONF = ROOT / "services" / "api" / "gunicorn.conf.py"


def binary(name: str) -> str:
    """A system binary (Debian puts nginx in /usr/sbin, which a user's PATH may lack)."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeUnavailable(f"{name} is not installed: run `make system-deps` (Debian: apt-get install {name})")


def _value(text: str) -> str:
    """supervisord expands `%(name)s` in every value, so a literal % is doubled."""
    return text.replace("%", "%%")


def _command(args: list[str]) -> str:
    return _value(shlex.join(args))


def _environment(env: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{_value(v)}"' for k, v in env.items())


def _program(name: str, command: list[str], log: Path, **options: object) -> str:
    lines = [f"[program:{name}]", f"command = {_command(command)}"]
    lines += [f"stdout_logfile = {_value(str(log))}", "redirect_stderr = true", "stdout_logfile_maxbytes = 10MB"]
    lines += [f"{key} = {value}" for key, value in options.items()]
    return "\n".join(lines)


def gunicorn_command(topology: Topology, port: int) -> list[str]:
    """One replica: gunicorn with the project's config, bound to its own 127.0.0.1 port."""
    args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"]
    if GUNICORN_CONF.exists():
        args += ["-c", str(GUNICORN_CONF)]
    else:
        args += ["-k", "uvicorn_worker.UvicornWorker"]
    if topology.workers:
        args += ["--workers", str(topology.workers)]
    return [*args, "rag_api.main:app"]


def replica_env(topology: Topology, index: int, upstream_base_url: str | None) -> dict[str, str]:
    """What differs per replica: its name, its metrics directory, and the stack's Redis and stub."""
    name = topology.replica_ids[index]
    return {
        "INSTANCE_ID": name,
        "PROMETHEUS_MULTIPROC_DIR": str(topology.run_dir / "prom" / name),
        "REDIS_URL": topology.redis_url,
        **topology.redis_layout.api_env(),
        "UPSTREAM_BASE_URL": upstream_base_url or f"{topology.stub_url}/v1",
    }


def _redis_programs(topology: Topology, logs: Path) -> list[str]:
    """The topology's redis-server nodes (`redis` first) and sentinels. Nodes are not restarted automatically:
    redis-kill / redis-start (and the chaos tests) decide; sentinels are."""
    layout = topology.redis_layout
    nodes = [
        _program(
            name,
            [
                binary("redis-server"),
                str(layout.auth_conf),  # requirepass, masterauth (written mode 0600 by redis_layout.prepare)
                *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(layout.node_dir(name))),
                *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
                *("--maxmemory", topology.redis_maxmemory, "--maxmemory-policy", "allkeys-lru", "--daemonize", "no"),
                *layout.node_args(name),
            ],
            logs / f"{name}.log",
            priority=10,
            autorestart="false",
            startsecs=0,
            stopwaitsecs=10,
        )
        for name, port in layout.nodes.items()
    ]
    sentinels = [
        _program(name, layout.sentinel_command(name), logs / f"{name}.log", priority=15, autorestart="true")
        for name in layout.sentinels
    ]
    return nodes + sentinels


def render(topology: Topology, upstream_base_url: str | None = None) -> str:
    """The whole supervisord.conf; every path lives under the topology's run dir."""
    run, logs = topology.run_dir, topology.run_dir / "logs"
    sections = [
        f"[unix_http_server]\nfile = {_value(str(run / 'supervisor.sock'))}\nchmod = 0700",
        "\n".join(
            [
                "[supervisord]",
                f"logfile = {_value(str(logs / 'supervisord.log'))}",
                f"pidfile = {_value(str(run / 'supervisord.pid'))}",
                f"childlogdir = {_value(str(logs))}",
                f"directory = {_value(str(run))}",
                "nodaemon = false",
                "logfile_maxbytes = 10MB",
            ]
        ),
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        f"[supervisorctl]\nserverurl = unix://{_value(str(run / 'supervisor.sock'))}",
        *_redis_programs(topology, logs),
        _program(
            "stub",
            [sys.executable, "-m", "upstream_stub", "--host", "127.0.0.1", "--port", str(topology.stub_port)],
            logs / "stub.log",
            priority=20,
            autorestart="true",
            startsecs=1,
            startretries=3,
            stopasgroup="true",
            killasgroup="true",
        ),
    ]
    for index, port in enumerate(topology.replica_ports):
        sections.append(
            _program(
                topology.replica_ids[index],
                gunicorn_command(topology, port),
                logs / f"{topology.replica_ids[index]}.log",
                environment=_environment(replica_env(topology, index, upstream_base_url)),
                priority=30,
                autorestart="true",
                startsecs=1,
                # A replica that cannot start (bad settings) goes FATAL after ~6 s and `up` reports it;
                # restarts after a crash of a running replica do not count against this.
                startretries=3,
                stopasgroup="true",
                killasgroup="true",
                stopwaitsecs=15,
            )
        )
    sections.append(f"[group:api]\nprograms = {','.join(topology.replica_ids)}")
    if topology.monitoring:
        prometheus = run / "prometheus"
        sections.append(
            _program(
                "prometheus",
                [
                    binary("prometheus"),
                    f"--config.file={prometheus / 'prometheus.yml'}",
                    f"--storage.tsdb.path={prometheus / 'data'}",
                    f"--web.listen-address=127.0.0.1:{topology.prometheus_port}",
                    "--storage.tsdb.retention.time=2d",
                ],
                logs / "prometheus.log",
                priority=50,
                autorestart="true",
                startsecs=1,
                stopwaitsecs=10,
            )
        )
    if topology.scaled:
        conf = run / "nginx" / "nginx.conf"
        sections.append(
            _program(
                "nginx",
                [binary("nginx"), "-e", str(logs / "nginx-error.log"), "-p", str(conf.parent), "-c", str(conf)],
                logs / "nginx.log",
                priority=40,
                autorestart="true",
                startsecs=1,
                stopsignal="QUIT",
                killasgroup="true",
                stopwaitsecs=10,
            )
        )
    return (
        "# GENERATED by deploy/supervisor_conf.py; rewritten by every `stack.py up`.\n\n" + "\n\n".join(sections) + "\n"
    )
