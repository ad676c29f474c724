"""Settings fail fast, naming the environment variable at fault."""

from __future__ import annotations

import pytest
from rag_api.cache import RedisOptions
from rag_api.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [("REDIS_MAX_CONNECTIONS", "0"), ("REDIS_PROTOCOL", "4"), ("CACHE_MAX_SIZE", "many"),
     ("TENANT_API_KEYS", "no-school-id"), ("CACHE_FALLBACK_ENABLED", "perhaps"), ("REDIS_SOCKET_TIMEOUT", "-1")],
)  # fmt: skip
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    """An invalid value stops start-up with a ConfigError that names the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The error names the variable but never repeats a value, which may be a key."""
    monkeypatch.setenv("TENANT_API_KEYS", "sk-very-secret:0")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "sk-very-secret" not in str(raised.value)


def test_the_admin_key_must_differ_from_tenant_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reusing a tenant key as the admin key is refused."""
    monkeypatch.setenv("TENANT_API_KEYS", "same:1")
    monkeypatch.setenv("ADMIN_API_KEY", "same")
    with pytest.raises(ConfigError, match="ADMIN_API_KEY"):
        load_settings()


def test_tenant_keys_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """`key:school_id,key:school_id` becomes a mapping of key to school."""
    monkeypatch.setenv("TENANT_API_KEYS", "a:1, b:22 ,")
    assert load_settings().tenant_api_keys == {"a": 1, "b": 22}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"UPSTREAM_TIMEOUT": "40", "REQUEST_TIMEOUT": "30", "CACHE_LEASE_WAIT": "10"}, "UPSTREAM_TIMEOUT"),
        ({"CACHE_LEASE_WAIT": "45", "REQUEST_TIMEOUT": "40"}, "CACHE_LEASE_WAIT"),
        ({"REQUEST_TIMEOUT": "59.5"}, "PROXY_READ_TIMEOUT"),
        ({"REQUEST_TIMEOUT": "50", "PROXY_READ_TIMEOUT": "30"}, "PROXY_READ_TIMEOUT"),
    ],
)
def test_the_request_budget_is_checked_against_its_parts(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    """The upstream timeout and the lease wait fit in REQUEST_TIMEOUT, which ends before nginx gives up."""
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_MODE": "sharded"}, "REDIS_MODE"),
        ({"REDIS_MODE": "sentinel"}, "REDIS_SENTINELS"),
        ({"REDIS_MODE": "cluster"}, "REDIS_CLUSTER_NODES"),
        ({"REDIS_MODE": "sentinel", "REDIS_SENTINELS": "host-without-port"}, "REDIS_SENTINELS"),
        ({"REDIS_MODE": "cluster", "REDIS_CLUSTER_NODES": "a:1,b:70000"}, "REDIS_CLUSTER_NODES"),
    ],
)
def test_a_topology_is_checked_at_start_up(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str) -> None:
    """An unknown REDIS_MODE, or Sentinel / Cluster without valid `host:port` endpoints, stops start-up."""
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_topology_endpoints_parse_and_the_password_stays_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """`host:port,host:port` becomes address pairs; REDIS_PASSWORD shows in no repr of the settings or options."""
    monkeypatch.setenv("REDIS_MODE", "sentinel")
    monkeypatch.setenv("REDIS_SENTINELS", "s1:26379, 10.0.0.2:26380,")
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2-redis")
    settings = load_settings()
    assert settings.redis_sentinels == (("s1", 26379), ("10.0.0.2", 26380))
    assert "hunter2-redis" not in repr(settings)
    options = RedisOptions(url="", mode="sentinel", sentinels=settings.redis_sentinels, password="hunter2-redis")
    assert "hunter2-redis" not in repr(options)
