"""Settings fail fast, naming the environment variable at fault."""

from __future__ import annotations

import pytest
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
