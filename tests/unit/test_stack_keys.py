"""Load tests and benchmarks use the keys of the running stack's configuration, not the demo keys."""

from __future__ import annotations

from pathlib import Path

from deploy.apienv import stack_keys
from loadtest.keyspace import DEMO_TENANT_KEYS, KEYS_VARIABLE, parse_tenant_keys
from loadtest.stackctl import locust_env
from loadtest.stackctl import stack_keys as keys_from_info


def test_stack_keys_follow_env_file_and_shell(tmp_path: Path) -> None:
    """A `.env` with real keys wins over the demo keys, and the shell wins over `.env`, as for the API itself."""
    env_file = tmp_path / ".env"
    env_file.write_text("TENANT_API_KEYS=real-a:7,real-b:8\nADMIN_API_KEY=real-admin\n")
    assert stack_keys({}, env_file) == {"tenants": {"real-a": 7, "real-b": 8}, "admin": "real-admin"}
    assert stack_keys({"TENANT_API_KEYS": "shell:9"}, env_file)["tenants"] == {"shell": 9}
    assert stack_keys({}, tmp_path / "missing.env")["admin"] == "demo-admin"


def test_loadtest_hands_the_stack_keys_to_locust() -> None:
    """run.py reads the keys from `info --json` and passes the tenant keys to the Locust users."""
    info = {"keys": {"tenants": {"real-a": 7}, "admin": "real-admin"}}
    tenants, admin = keys_from_info(info)
    assert (tenants, admin) == ({"real-a": 7}, "real-admin")
    assert parse_tenant_keys(locust_env(tenants)[KEYS_VARIABLE]) == {"real-a": 7}
    assert keys_from_info({}) == (DEMO_TENANT_KEYS, "demo-admin")
