"""The tiered cache: a bounded memory tier in front of Redis, tenant-isolated, coherent across replicas.

`get_embedding_cache()` and `get_llm_cache()` return the process-wide managers, configured from Settings.
"""

from ._deadline import DeadlineExceededError, deadline_at, remaining, request_deadline
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
from ._lookup import CachePolicy, Lookup
from ._manager import CacheManager
from ._memory import MemoryTier
from ._redis import RedisOptions, RedisTier, SyncRedisTier
from ._singleflight import FailureCodec
from ._streams import Broadcast, StreamStart
from ._tier import CacheTier

__all__ = [
    "BackendBusyError",
    "BackendCommandError",
    "Broadcast",
    "CacheBackendError",
    "CacheError",
    "CacheManager",
    "CachePolicy",
    "CacheTier",
    "CacheUnavailableError",
    "CorruptValueError",
    "DeadlineExceededError",
    "FailureCodec",
    "InvalidKeyError",
    "Lookup",
    "MemoryTier",
    "RedisOptions",
    "RedisTier",
    "StreamStart",
    "SyncRedisTier",
    "UnsupportedValueError",
    "build_cache",
    "deadline_at",
    "get_embedding_cache",
    "get_llm_cache",
    "remaining",
    "request_deadline",
    "reset_caches",
    "tenant_key",
]
