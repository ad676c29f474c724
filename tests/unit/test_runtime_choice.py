"""RUNTIME=auto picks Docker only when the engine and Compose are recent enough, and says why it runs locally;
stack commands fail with a message and an exit status, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import stack
from deploy.docker import _version, docker_unavailable
from deploy.runtime import resolve
from deploy.topology import ROOT, compose_project


def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, engine: str | None, compose: str | None) -> None:
    """A `docker` on PATH that answers `version` with `engine` and `compose version` with `compose` (None: fails)."""
    script = ["#!/bin/sh", 'if [ "$1" = compose ]; then']
    script += [f'  echo "{compose}"; exit 0' if compose else '  echo "unknown command: compose" >&2; exit 1']
    script += ["fi", f'echo "{engine}"; exit 0' if engine else 'echo "Cannot connect to the Docker daemon" >&2; exit 1']
    path = tmp_path / "bin" / "docker"
    path.parent.mkdir()
    path.write_text("\n".join(script) + "\n")
    path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{path.parent}:/usr/bin:/bin")


def test_version_numbers_are_read_from_distribution_strings() -> None:
    """Debian's '26.1.5+dfsg1', Compose's 'v2.26.1-4' and '2.24.4' compare as numbers."""
    assert _version("26.1.5+dfsg1") == (26, 1, 5)
    assert _version("v2.26.1-4") >= (2, 24, 4) > _version("2.24.3")
    assert _version("20.10.24+dfsg1") < (25, 0)


@pytest.mark.parametrize(
    ("engine", "compose", "reason"),
    [
        (None, "2.26.1", "no Docker engine answers"),
        ("20.10.24+dfsg1", "2.26.1", "older than 25.0"),
        ("26.1.5", None, "Compose plugin"),
        ("26.1.5", "2.20.3", "older than 2.24.4"),
    ],
)
def test_auto_runs_locally_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str | None, compose: str | None, reason: str
) -> None:
    """No engine, an engine older than 25, no Compose plugin, or a Compose older than 2.24.4: local, with the reason."""
    fake_docker(tmp_path, monkeypatch, engine=engine, compose=compose)
    runtime, why = resolve("auto")
    assert runtime == "local"
    assert reason in why


def test_auto_picks_docker_when_both_are_recent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine 26 and Compose 2.26: Docker."""
    fake_docker(tmp_path, monkeypatch, engine="26.1.5+dfsg1", compose="2.26.1-4")
    assert docker_unavailable() is None
    assert resolve("auto")[0] == "docker"


def test_docker_up_on_an_old_engine_exits_2_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RUNTIME=docker on Engine 20.10 stops before Compose runs, with a message and exit status 2."""
    fake_docker(tmp_path, monkeypatch, engine="20.10.24", compose="2.26.1")
    status = stack.main(["--runtime", "docker", "--run-dir", str(tmp_path / "run"), "up", "--scaled"])
    assert status == 2
    err = capsys.readouterr().err
    assert "older than 25.0" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "stack.json").exists()


def test_a_failed_compose_up_prints_the_logs_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`docker compose up` exiting non-zero (an unhealthy container): exit 1, the containers' logs, no traceback."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  "version "*) echo 26.1.5 ;;\n'
        '  "compose version"*) echo 2.26.1 ;;\n'
        '  *" up "*) echo "container rag-cache-api-1 is unhealthy" >&2; exit 1 ;;\n'
        '  *" logs "*) echo "api-1  | ValueError: TENANT_API_KEYS is not key:school" ;;\n'
        '  *" ps"*) echo "rag-cache-api-1  unhealthy" ;;\n'
        "esac\n"
    )
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    status = stack.main(["--runtime", "docker", "--run-dir", str(tmp_path / "run"), "up", "--scaled"])
    assert status == 1
    err = capsys.readouterr().err
    assert "TENANT_API_KEYS is not key:school" in err
    assert "rag-cache-api-1  unhealthy" in err
    assert "not ready" in err
    assert "Traceback" not in err


def test_each_run_dir_is_a_compose_project_of_its_own(tmp_path: Path) -> None:
    """The default run dir keeps the Compose file's `rag-cache`; another run dir gets a stable name of its own;
    COMPOSE_PROJECT_NAME wins over both."""
    assert compose_project(ROOT / ".run", {}) == "rag-cache"
    own = compose_project(tmp_path / "run", {})
    assert own.startswith("rag-cache-")
    assert own == compose_project(tmp_path / "run", {})
    assert own != compose_project(tmp_path / "other", {})
    assert compose_project(tmp_path / "run", {"COMPOSE_PROJECT_NAME": "mine"}) == "mine"


def test_a_docker_stack_never_runs_on_a_published_redis_password(tmp_path: Path) -> None:
    """REDIS_PASSWORD from the shell, else from .env, else one generated into the run dir (0600) and kept."""
    from deploy.topology import Topology, ensure_redis_password

    stack = Topology(runtime="local", run_dir=tmp_path / "run", env_file=tmp_path / ".env")
    made = ensure_redis_password(stack, {})
    assert len(made) >= 24
    assert ensure_redis_password(stack, {}) == made == stack.redis_password
    assert (stack.run_dir / "redis-password").stat().st_mode & 0o777 == 0o600
    assert stack.redis_url.startswith("redis://:")
    (tmp_path / ".env").write_text("OTHER=1\nREDIS_PASSWORD='from-env-file'\n")
    assert ensure_redis_password(stack, {}) == "from-env-file"
    assert ensure_redis_password(stack, {"REDIS_PASSWORD": "from-shell"}) == "from-shell"
