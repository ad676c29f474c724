"""The API replicas' environment: the caller's Settings variables, then `.env`, then the demo keys."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from rag_api.config import DEMO_ADMIN_KEY, DEMO_TENANT_KEYS, Settings

SETTINGS_ENV = tuple(name.upper() for name in Settings.model_fields)
# The stack points every replica at its own Redis and names each replica; the caller cannot override these.
STACK_OWNED = ("REDIS_URL", "INSTANCE_ID", "PROMETHEUS_MULTIPROC_DIR")


def api_env(environ: Mapping[str, str], env_file: Path) -> dict[str, str]:
    """Settings variables for the replicas; the shell wins over `.env`, as pydantic-settings would decide."""
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.exists() else {}
    env: dict[str, str] = {}
    for name in SETTINGS_ENV:
        if name in STACK_OWNED:
            continue
        if name in environ:
            env[name] = environ[name]
        elif name in from_file:
            env[name] = from_file[name]
    if "TENANT_API_KEYS" not in env and "ADMIN_API_KEY" not in env:
        env["TENANT_API_KEYS"], env["ADMIN_API_KEY"] = DEMO_TENANT_KEYS, DEMO_ADMIN_KEY
    return env


def without_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` minus every Settings variable, so only `api_env`'s choice reaches the processes."""
    return {k: v for k, v in environ.items() if k not in SETTINGS_ENV and k != "PROMETHEUS_MULTIPROC_DIR"}


def stack_keys(environ: Mapping[str, str], env_file: Path) -> dict[str, Any]:
    """The keys the stack's API accepts, as `api_env` hands them to it: {"tenants": {key: school}, "admin": key}.
    Load tests and benchmarks use these, so a `.env` with real keys works as well as the demo keys."""
    env = api_env(environ, env_file)
    settings = Settings(
        _env_file=None,
        tenant_api_keys=env.get("TENANT_API_KEYS", ""),
        admin_api_key=env.get("ADMIN_API_KEY") or None,
    )
    admin = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    return {"tenants": dict(settings.tenant_api_keys), "admin": admin}
