"""The one place configuration is read: environment variables and `.env`, validated at start-up."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEMO_TENANT_KEYS = "demo-school-123:123,demo-school-456:456"
DEMO_ADMIN_KEY = "demo-admin"

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Settings(BaseSettings):
    """Every setting of the API service; names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Redis, the shared primary tier (the seed's names).
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_enabled: bool = True
    redis_max_connections: PositiveInt = 50
    redis_protocol: Annotated[int, Field(ge=2, le=3)] = 3
    redis_connect_timeout: PositiveFloat = 0.25
    redis_socket_timeout: PositiveFloat = 0.25
    redis_pool_timeout: PositiveFloat = 0.25
    # Topology (README "Outgrowing one Redis"): standalone uses REDIS_URL; sentinel finds the primary named
    # REDIS_SENTINEL_MASTER through REDIS_SENTINELS; cluster starts from any of REDIS_CLUSTER_NODES.
    redis_mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    redis_sentinels: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()
    redis_sentinel_master: str = "mymaster"
    redis_cluster_nodes: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()
    redis_password: SecretStr | None = None

    # Memory tier, the per-process fallback (the seed's CACHE_MAX_SIZE, plus a byte bound).
    cache_max_size: PositiveInt = 10_000
    cache_max_bytes: PositiveInt = 256 * 1024 * 1024
    cache_memory_ttl_max: PositiveFloat = 300.0
    cache_default_ttl: PositiveInt = 3600
    embedding_cache_ttl: PositiveInt = 7 * 24 * 3600
    llm_cache_ttl: PositiveInt = 24 * 3600
    cache_fallback_enabled: bool = True
    cache_breaker_failure_threshold: PositiveInt = 1
    cache_breaker_probe_interval: PositiveFloat = 0.25
    cache_lease_ttl: PositiveFloat = 3.0
    cache_lease_wait: PositiveFloat = 30.0
    cache_lease_poll_interval: PositiveFloat = 0.05
    cache_ttl_jitter: Annotated[float, Field(ge=0, lt=1)] = 0.0
    cache_early_refresh_beta: Annotated[float, Field(ge=0)] = 0.0
    # Fail-safe: an entry stays this long past its TTL, served (X-Cache: STALE) only when recomputing it fails.
    cache_stale_if_error: Annotated[float, Field(ge=0)] = 24 * 3600.0
    # A failed compute is remembered this long and shared with the processes waiting on its lease (0: off).
    cache_failure_ttl: Annotated[float, Field(ge=0, le=60)] = 2.0
    # Sampled chat answers (temperature > 0 or top_p < 1, no seed) are cached like any other; false: they
    # bypass the cache (X-Cache: BYPASS), so each such request gets a fresh sample.
    cache_sampled_completions: bool = True
    # Fair sharing between schools: a school's share of each process's memory tier, and its Redis writes of
    # computed values per second per process (with bursts), past which answers are served but not shared.
    cache_tenant_max_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    cache_tenant_write_rate: Annotated[float, Field(ge=0)] = 200.0
    cache_tenant_write_burst: Annotated[float, Field(ge=0)] = 2000.0
    # A streamed answer may take longer than REQUEST_TIMEOUT once it flows (which bounds its first chunk).
    cache_stream_max_seconds: PositiveFloat = 600.0

    # Tenants and auth.
    tenant_api_keys: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    admin_api_key: SecretStr | None = None

    # Upstream model (OpenAI-compatible, or Azure OpenAI when azure_openai_api_version is set).
    upstream_base_url: str = "http://127.0.0.1:8090/v1"
    upstream_api_key: SecretStr = SecretStr("stub-key")
    upstream_timeout: PositiveFloat = 30.0
    upstream_max_retries: Annotated[int, Field(ge=0, le=5)] = 0
    upstream_breaker_threshold: Annotated[int, Field(ge=0)] = 5  # consecutive failures that open it; 0: off
    upstream_breaker_cooldown: PositiveFloat = 5.0
    azure_openai_api_version: str | None = None

    # One time budget per request, shared by the lease wait and the upstream call; it must end before the
    # proxy in front gives up (nginx's proxy_read_timeout, 60 s in nginx/proxy.conf), so every client gets
    # the API's own answer.
    request_timeout: PositiveFloat = 50.0
    proxy_read_timeout: PositiveFloat = 60.0

    # Service.
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    max_request_bytes: PositiveInt = 1024 * 1024
    max_batch_size: PositiveInt = 256
    max_input_chars: PositiveInt = 32_000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Observability (rag_api.access_log, rag_api.monitoring): one access line per request, in JSON or text.
    log_format: Literal["json", "text"] = "json"
    access_log: bool = True
    metrics_interval: PositiveFloat = 2.0  # how often each worker exports its cache and Redis figures
    metrics_max_schools: Annotated[int, Field(ge=0)] = 100  # schools with their own metric label; others "other"
    # `model:usd_per_million_tokens,...`: prices what the model served and what the cache saved; one price per
    # model for all its tokens. The default: the demo models at list prices when written (chat: a blend).
    model_prices: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=lambda: {"text-embedding-3-small": 0.02, "text-embedding-3-large": 0.13, "gpt-4o-mini": 0.6}
    )
    # On start, each worker fills its memory tier from Redis with the most recently used entries.
    cache_prewarm_seconds: Annotated[float, Field(ge=0, le=60)] = 2.0  # 0: off
    cache_prewarm_max_bytes: PositiveInt = 64 * 1024 * 1024

    @field_validator("tenant_api_keys", mode="before")
    @classmethod
    def _parse_tenant_keys(cls, raw: object) -> object:
        """Parse `key:school_id,key:school_id`; a malformed pair fails start-up naming the variable."""
        if not isinstance(raw, str):
            return raw
        keys: dict[str, int] = {}
        for number, key, school in _pairs(raw):
            if not key or not school.isdigit() or int(school) <= 0:
                # The entry is named by position, never quoted: it holds a key.
                raise ValueError(f"TENANT_API_KEYS entry {number} is not 'key:positive_school_id'")
            keys[key] = int(school)
        return keys

    @field_validator("model_prices", mode="before")
    @classmethod
    def _parse_prices(cls, raw: object) -> object:
        """Parse `model:price,model:price` (US dollars per million tokens)."""
        if not isinstance(raw, str):
            return raw
        prices: dict[str, float] = {}
        for number, model, price in _pairs(raw):
            try:
                value = float(price)
            except ValueError:
                value = -1.0
            if not model or not value >= 0:
                raise ValueError(f"MODEL_PRICES entry {number} is not 'model:usd_per_million_tokens'")
            prices[model] = value
        return prices

    @field_validator("redis_sentinels", "redis_cluster_nodes", mode="before")
    @classmethod
    def _parse_addresses(cls, raw: object) -> object:
        """Parse `host:port,host:port`; a malformed entry fails start-up naming it."""
        if not isinstance(raw, str):
            return raw
        addresses: list[tuple[str, int]] = []
        for entry in filter(None, (e.strip() for e in raw.split(","))):
            host, sep, port = entry.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{entry!r} is not 'host:port'")
            addresses.append((host, int(port)))
        return tuple(addresses)

    @model_validator(mode="after")
    def _check_topology(self) -> Settings:
        if self.redis_mode == "sentinel" and not self.redis_sentinels:
            raise ValueError("REDIS_MODE=sentinel needs REDIS_SENTINELS (host:port,host:port)")
        if self.redis_mode == "cluster" and not self.redis_cluster_nodes:
            raise ValueError("REDIS_MODE=cluster needs REDIS_CLUSTER_NODES (host:port,host:port)")
        return self

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        admin = self.admin_api_key.get_secret_value() if self.admin_api_key else None
        if admin is not None and admin in self.tenant_api_keys:
            raise ValueError("ADMIN_API_KEY must differ from every key in TENANT_API_KEYS")
        if self.upstream_timeout > self.request_timeout:
            raise ValueError("UPSTREAM_TIMEOUT must not exceed REQUEST_TIMEOUT (the request's whole budget)")
        if self.cache_lease_wait > self.request_timeout:
            raise ValueError("CACHE_LEASE_WAIT must not exceed REQUEST_TIMEOUT (the request's whole budget)")
        if self.request_timeout + 1.0 > self.proxy_read_timeout:
            raise ValueError(
                "REQUEST_TIMEOUT must end at least 1 s before PROXY_READ_TIMEOUT (nginx's proxy_read_timeout), "
                "or clients get the proxy's error instead of the API's answer"
            )
        return self


def _pairs(raw: str) -> Iterator[tuple[int, str, str]]:
    """The `left:right` entries of a comma-separated list, numbered from 1; `left` is empty without a colon."""
    for number, pair in enumerate(filter(None, (p.strip() for p in raw.split(","))), start=1):
        left, sep, right = pair.rpartition(":")
        yield number, left if sep else "", right


class ConfigError(ValueError):
    """Invalid configuration; the message names each environment variable and what is wrong with it."""


def load_settings() -> Settings:
    """Settings from the environment and `.env`, or ConfigError naming the variables (never their values,
    which may be keys)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            f"{'_'.join(str(part) for part in error['loc']).upper() or 'configuration'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests call `get_settings.cache_clear()` after changing env."""
    return load_settings()
