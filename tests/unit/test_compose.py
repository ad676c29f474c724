"""The Compose files against the Compose specification, and against nginx's config, Settings and .env.example.

Schema: `compose-spec.json` vendored by check-jsonschema (the `vendor.compose-spec` builtin schema, fetched by
check-jsonschema from https://raw.githubusercontent.com/compose-spec/compose-spec/master/schema/compose-spec.json;
the copy in the installed check-jsonschema release is used, its version is printed in failures).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from rag_api.config import Settings

from deploy import nginx_conf
from deploy.compose_file import interpolate, load_compose, merge_compose

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
SCALE = ROOT / "docker-compose.scale.yml"
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
# Variables the API's container environment may carry that are not Settings fields, with the reason.
NON_SETTINGS_ENV: set[str] = set()  # none today; add a name here with the reason if one is needed
CHECK_JSONSCHEMA_VERSION = importlib.metadata.version("check-jsonschema")


def compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema as check-jsonschema ships it."""
    ref = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(ref.read_text(encoding="utf-8"))
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(compose_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return load_compose(BASE)


@pytest.fixture(scope="module")
def merged(base: dict[str, Any]) -> dict[str, Any]:
    return merge_compose(base, load_compose(SCALE))


def proxy_conf() -> str:
    return nginx_conf.SHARED_CONF.read_text()


def directive(conf: str, name: str) -> str:
    """The arguments of the one `name ...;` directive in `conf`."""
    found = re.findall(rf"^\s*{name}\s+([^;]*);", conf, flags=re.MULTILINE)
    assert len(found) == 1, f"expected one `{name}` directive, found {found}"
    return str(found[0]).strip()


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host port, container port) of each short-syntax `ports` entry, after interpolation with defaults."""
    pairs = []
    for entry in service.get("ports", []):
        parts = interpolate(str(entry), {}).split(":")
        pairs.append((parts[-2], parts[-1]))
    return pairs


def env_names(service: dict[str, Any]) -> set[str]:
    env = service.get("environment", {})
    return set(env) if isinstance(env, dict) else {str(e).split("=", 1)[0] for e in env}


@pytest.mark.parametrize("name", ["base", "merged"])
def test_compose_files_validate_against_the_compose_schema(name: str, request: pytest.FixtureRequest) -> None:
    """docker-compose.yml alone and merged with docker-compose.scale.yml are valid Compose documents."""
    document = request.getfixturevalue(name)
    for candidate in (document, interpolate(document, {})):
        errors = schema_errors(candidate)
        assert not errors, f"compose-spec.json (check-jsonschema {CHECK_JSONSCHEMA_VERSION}): {errors}"


def test_the_scale_file_alone_is_valid_once_its_tags_are_read() -> None:
    """docker-compose.scale.yml on its own, with `!reset` read as its empty value, is a valid Compose document."""
    errors = schema_errors(load_compose(SCALE, keep_tags=False))
    assert not errors, errors


def test_a_broken_document_fails_the_schema() -> None:
    """The schema check is live: an unknown service key is rejected."""
    assert schema_errors({"services": {"api": {"image": "x", "replicas_typo": 3}}})


def test_services_and_published_ports(base: dict[str, Any], merged: dict[str, Any]) -> None:
    """Base: redis, stub and api on 8001; scaled: nginx on 8080, api unpublished, Redis never on the host;
    Prometheus and Grafana only in the monitoring profile."""
    monitoring = {"prometheus", "grafana"}
    assert set(base["services"]) == {"redis", "stub", "api", *monitoring}
    assert set(merged["services"]) == {"redis", "stub", "api", "nginx", *monitoring}
    for name in monitoring:
        assert merged["services"][name]["profiles"] == ["monitoring"]
        assert all(port.startswith("127.0.0.1:") for port in merged["services"][name]["ports"])
    assert published(base["services"]["api"]) == [("8001", "8001")]
    assert published(base["services"]["stub"]) == [("8090", "8090")]
    assert published(merged["services"]["stub"]) == [("8090", "8090")]
    assert "ports" not in merged["services"]["api"]
    assert published(merged["services"]["nginx"]) == [("8080", nginx_conf.DOCKER_LISTEN)]
    for document in (base, merged):
        assert "ports" not in document["services"]["redis"]
        assert "container_name" not in document["services"]["api"]
    assert merged["services"]["api"]["deploy"]["replicas"] == "${REPLICAS:-3}"


def test_images_are_pinned_and_overridable(merged: dict[str, Any]) -> None:
    """Every image is `${X_IMAGE:-name:version}` with an explicit version tag; nginx is 1.27.3 or newer."""
    for name, service in merged["services"].items():
        match = re.fullmatch(r"\$\{([A-Z_]+_IMAGE):-([^}:]+):([^}]+)\}", service["image"])
        assert match, f"{name}: image {service['image']!r} is not ${{X_IMAGE:-name:tag}}"
        assert re.match(r"v?\d+\.\d+", match.group(3)), f"{name}: tag {match.group(3)!r} is not a version"
    nginx_tag = re.search(r":(\d+)\.(\d+)\.(\d+)", merged["services"]["nginx"]["image"])
    assert nginx_tag
    assert tuple(map(int, nginx_tag.groups())) >= (1, 27, 3), "nginx `resolve` needs >= 1.27.3"
    assert merged["services"]["redis"]["image"].split(":-")[1].startswith("redis:7.")


def test_redis_command_and_healthcheck(base: dict[str, Any]) -> None:
    """Redis has the seed's memory policy, AOF every second, a password, a volume, and a PONG-only check."""
    redis = base["services"]["redis"]
    command = " ".join(redis["command"])
    flags = ("--maxmemory ${REDIS_MAXMEMORY:-512mb}", "--maxmemory-policy allkeys-lru", "--appendonly yes",
             "--appendfsync everysec")  # fmt: skip
    for flag in flags:
        assert flag in command
    # No default password: Compose refuses to start without one (make up generates one into the run dir).
    assert "--requirepass ${REDIS_PASSWORD:?" in command
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    test = redis["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert "= PONG" in test[1], "LOADING and NOAUTH replies must fail the check"
    assert redis["volumes"] == ["redis-data:/data"]
    assert "redis-data" in base["volumes"]


def test_healthchecks_and_dependencies(merged: dict[str, Any]) -> None:
    """Every service has a healthcheck, and every `service_healthy` dependency points at one."""
    services = merged["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, (name, dep)
            assert cond == {"condition": "service_healthy"}, (name, dep, cond)
    assert services["api"]["depends_on"].keys() == {"redis", "stub"}
    assert services["nginx"]["depends_on"].keys() == {"api"}
    assert "http://127.0.0.1:8001/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8090/healthz" in " ".join(services["stub"]["healthcheck"]["test"])
    nginx_check = " ".join(services["nginx"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{nginx_conf.DOCKER_LISTEN}/nginx/healthz" in nginx_check
    assert "location = /nginx/healthz" in proxy_conf()


def test_api_environment_matches_settings(base: dict[str, Any]) -> None:
    """The API's environment names are Settings fields, and every field but INSTANCE_ID reaches the container."""
    names = env_names(base["services"]["api"])
    assert names - SETTINGS_ENV <= NON_SETTINGS_ENV, f"not Settings fields: {names - SETTINGS_ENV}"
    assert SETTINGS_ENV - names == {"INSTANCE_ID"}, f"Settings fields the container never gets: {SETTINGS_ENV - names}"
    command = " ".join(base["services"]["api"]["command"])
    assert (
        "INSTANCE_ID=$$(cat /etc/hostname) exec gunicorn -c services/api/gunicorn.conf.py rag_api.main:app" in command
    )
    assert "services/api/gunicorn.conf.py" in (ROOT / "services" / "api" / "Dockerfile").read_text()
    env = interpolate(base["services"]["api"]["environment"], {})
    assert re.fullmatch(r"redis://:[^@]+@redis:6379/0", env["REDIS_URL"])
    assert env["UPSTREAM_BASE_URL"] == "http://stub:8090/v1"
    assert env["TENANT_API_KEYS"] == "demo-school-123:123,demo-school-456:456"
    # The values set (null = passed through only when the caller sets it) make valid settings.
    Settings(_env_file=None, **{k.lower(): v for k, v in env.items() if k in SETTINGS_ENV and v is not None})


def test_nginx_upstream_matches_the_api_service(merged: dict[str, Any]) -> None:
    """nginx's Docker upstream is the `api` service's port, re-resolved, and the committed file is current."""
    assert nginx_conf.docker_conf() == nginx_conf.DOCKER_CONF.read_text(), "run `python -m deploy.nginx_conf`"
    conf = nginx_conf.DOCKER_CONF.read_text()
    service, port = nginx_conf.DOCKER_API_TARGET.split(":")
    assert service in merged["services"]
    assert port == "8001"
    assert f"server {nginx_conf.DOCKER_API_TARGET} resolve" in conf
    assert "resolver 127.0.0.11 valid=5s" in conf
    assert re.search(r"zone rag_api \d+k;", conf)
    mounts = merged["services"]["nginx"]["volumes"]
    assert f"./nginx/proxy.conf:{nginx_conf.DOCKER_SHARED_PATH}:ro" in mounts
    assert "./nginx/docker.conf:/etc/nginx/conf.d/default.conf:ro" in mounts


def test_shared_proxy_configuration() -> None:
    """Keep-alive, bounded retries on a replica's own failure only, a short connect timeout, X-Upstream-Addr,
    a size limit."""
    conf = proxy_conf()
    assert directive(conf, "proxy_pass") == "http://rag_api"
    assert directive(conf, "proxy_http_version") == "1.1"
    assert 'proxy_set_header Connection ""' in conf
    retry_on = set(directive(conf, "proxy_next_upstream").split())
    assert {"error", "timeout"} <= retry_on
    # An answered status is the API's (a model failure mapped to 502/504): never retried, never a replica fault.
    assert not {s for s in retry_on if s.startswith("http_")}
    assert 1 < int(directive(conf, "proxy_next_upstream_tries")) <= 5
    assert float(directive(conf, "proxy_connect_timeout").removesuffix("s")) <= 2
    assert "add_header X-Upstream-Addr $upstream_addr always" in conf
    limit = directive(conf, "client_max_body_size")
    assert int(limit.removesuffix("m")) * 1024 * 1024 == Settings.model_fields["max_request_bytes"].default
    assert "keepalive" in nginx_conf.upstream_block(["x:1"])


def test_request_budget_ends_before_nginx_gives_up() -> None:
    """Settings' PROXY_READ_TIMEOUT is nginx's proxy_read_timeout, and the default REQUEST_TIMEOUT ends first."""
    conf = proxy_conf()
    nginx_read = float(directive(conf, "proxy_read_timeout").removesuffix("s"))
    fields = Settings.model_fields
    assert fields["proxy_read_timeout"].default == nginx_read
    assert fields["request_timeout"].default + 1 <= nginx_read
    assert fields["upstream_timeout"].default <= fields["request_timeout"].default


def test_local_nginx_config_is_accepted_by_nginx(tmp_path: Path) -> None:
    """The local runtime's generated nginx.conf passes `nginx -t` (no port is bound by the test)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.skip("nginx is not installed (make system-deps)")
    conf = nginx_conf.write_local(run_dir=tmp_path, listen_port=18080, replica_ports=[18001, 18002])
    result = subprocess.run(
        [binary, "-t", "-q", "-e", str(tmp_path / "logs" / "e.log"), "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_env_example_documents_every_setting() -> None:
    """.env.example names every Settings field, each after a comment line, with the demo keys set."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    for name in sorted(SETTINGS_ENV):
        index = next((i for i, line in enumerate(lines) if re.match(rf"#?\s*{name}=", line)), None)
        assert index is not None, f".env.example does not document {name}"
        comment = lines[index - 1]
        assert comment.startswith("# "), f"{name} has no comment line above it"
        assert not re.match(r"#\s*[A-Z_]+=", comment), f"{name} has no comment line above it"
    assert "TENANT_API_KEYS=demo-school-123:123,demo-school-456:456" in lines
    assert "ADMIN_API_KEY=demo-admin" in lines
