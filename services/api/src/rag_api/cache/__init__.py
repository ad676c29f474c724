"""The tiered cache: a bounded memory tier in front of Redis, tenant-isolated, coherent across replicas.

`get_embedding_cache()` and `get_llm_cache()` return the process-wide managers, configured from Settings.
"""

from ._errors import (
    BackendBusyError,
    BackendCommandError,
    CacheBackendError,
    CacheError,
    CacheUnavailableError,
    CorruptValueError,
    InvalidKeyError,
    UnsupportedValueError,
)
from ._factory import build_cache, get_embedding_cache, get_llm_cache, reset_caches
from ._keys import tenant_key
from ._manager import CacheManager, CachePolicy, Lookup
from ._memory import MemoryTier
from ._redis import RedisOptions, RedisTier, SyncRedisTier
from ._tier import CacheTier

__all__ = [
    "BackendBusyError",
    "BackendCommandError",
    "CacheBackendError",
    "CacheError",
    "CacheManager",
    "CachePolicy",
    "CacheTier",
    "CacheUnavailableError",
    "CorruptValueError",
    "InvalidKeyError",
    "Lookup",
    "MemoryTier",
    "RedisOptions",
    "RedisTier",
    "SyncRedisTier",
    "UnsupportedValueError",
    "build_cache",
    "get_embedding_cache",
    "get_llm_cache",
    "reset_caches",
    "tenant_key",
]
