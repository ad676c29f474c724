"""Tenant namespacing: every Redis and memory key is `cache:{cache_name}:school:{school_id}:{key}`."""

from __future__ import annotations

import hashlib
import re

from ._errors import InvalidKeyError

# Key parts made only of these characters are used as they are; anything else (glob characters, spaces,
# non-ASCII, very long keys) is hashed, and the `#` prefix cannot be produced by a plain key.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")
_CACHE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def check_cache_name(name: str) -> str:
    if not _CACHE_NAME.fullmatch(name):
        raise InvalidKeyError(f"cache name {name!r} must match {_CACHE_NAME.pattern}")
    return name


def check_school_id(school_id: object) -> int:
    """A school_id is a positive int (bools and numeric strings are refused)."""
    if type(school_id) is not int or school_id <= 0:
        raise InvalidKeyError(f"school_id must be a positive integer, not {school_id!r}")
    return school_id


def key_part(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"cache key must be a non-empty str, not {key!r}")
    if _PLAIN_KEY.fullmatch(key):
        return key
    return "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def cache_prefix(cache_name: str) -> str:
    return f"cache:{cache_name}:"


def school_prefix(cache_name: str, school_id: object) -> str:
    return f"cache:{cache_name}:school:{check_school_id(school_id)}:"


def tenant_key(cache_name: str, school_id: object, key: object) -> str:
    """The full key; two different (school_id, key) pairs never give the same full key."""
    return f"cache:{cache_name}:school:{check_school_id(school_id)}:{key_part(key)}"


def lease_key(full_key: str) -> str:
    """The single-flight lease of a full key; outside `cache:` so that clear() never touches leases."""
    return "lease:" + full_key


def failure_key(full_key: str) -> str:
    """Where a failed compute of a full key is remembered for a moment; outside `cache:` like leases."""
    return "failed:" + full_key


def stream_key(full_key: str) -> str:
    """The Redis Stream that carries a streamed answer's chunks to other replicas while it is produced."""
    return "stream:" + full_key
