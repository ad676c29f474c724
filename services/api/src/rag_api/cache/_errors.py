"""The cache's own errors; Redis errors become these at the Redis boundary (`_redis.py`) and nowhere else.

CacheError
 ├── InvalidKeyError (also ValueError)       a school_id or key that cannot be namespaced
 ├── UnsupportedValueError (also TypeError)  a value with no safe serialization (no pickle)
 ├── CorruptValueError                       stored bytes that are not one of our envelopes: read as a miss
 ├── CacheBackendError                       Redis failed: connection, timeout, LOADING, OS error
 │    └── BackendBusyError                   no pooled connection free in time (does not trip the breaker)
 └── CacheUnavailableError                   Redis is down and the memory fallback is switched off
"""

from __future__ import annotations


class CacheError(Exception):
    """Base of every error the cache raises."""


class InvalidKeyError(CacheError, ValueError):
    """A school_id or key that cannot be placed safely in a tenant's namespace."""


class UnsupportedValueError(CacheError, TypeError):
    """A value that the cache has no safe serialization for."""


class CorruptValueError(CacheError):
    """Stored bytes that are not a valid envelope; callers see a miss, never this error."""


class CacheBackendError(CacheError):
    """Redis did not answer as it should (connection, timeout, loading, OS error)."""


class BackendBusyError(CacheBackendError):
    """Every pooled Redis connection stayed busy for the whole pool timeout."""


class BackendCommandError(CacheBackendError):
    """Redis is up but refused the command (an error reply such as an unknown command): not an outage."""


class CacheUnavailableError(CacheError):
    """Redis is unavailable and CACHE_FALLBACK_ENABLED is false, so there is no tier to serve from."""
