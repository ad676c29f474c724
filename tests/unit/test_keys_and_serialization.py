"""Tenant keys and the stored envelope."""

from __future__ import annotations

import math
import random
import struct
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rag_api.cache import CorruptValueError, InvalidKeyError, UnsupportedValueError, tenant_key
from rag_api.cache._keys import school_prefix
from rag_api.cache._serialization import HEADER_SIZE, decode, encode


def test_key_layout_is_the_contracts() -> None:
    """Plain keys keep the layout cache:{name}:school:{id}:{key}."""
    assert tenant_key("embedding", 123, "embeddings_abc123") == "cache:embedding:school:123:embeddings_abc123"


@pytest.mark.parametrize("school_id", [0, -1, True, "123", 1.0, None])
def test_school_id_must_be_a_positive_int(school_id: object) -> None:
    """Anything but a positive int as school_id is refused."""
    with pytest.raises(InvalidKeyError):
        tenant_key("embedding", school_id, "k")


@pytest.mark.parametrize("key", ["*", "a b", "school:456:x*", "x" * 201, "ключ", "a\nb", "[abc]", "?"])
def test_unsafe_keys_are_hashed_inside_the_tenant_namespace(key: str) -> None:
    """Glob characters, whitespace, non-ASCII and long keys are hashed, and stay under the tenant prefix."""
    full = tenant_key("embedding", 123, key)
    assert full.startswith(school_prefix("embedding", 123) + "#")
    assert len(full) < 120


@given(st.integers(1, 10**6), st.text(min_size=1), st.integers(1, 10**6), st.text(min_size=1))
def test_different_tenants_or_keys_never_share_a_full_key(a: int, ka: str, b: int, kb: str) -> None:
    """Two different (school_id, key) pairs never map to the same Redis key or to each other's prefix."""
    if (a, ka) != (b, kb):
        assert tenant_key("llm", a, ka) != tenant_key("llm", b, kb)
    if a != b:
        assert not tenant_key("llm", a, ka).startswith(school_prefix("llm", b))


@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=64))
def test_float32_lists_round_trip_exactly(values: list[float]) -> None:
    """A list of float32-representable floats is stored packed and read back exactly."""
    data = encode(values)
    assert len(data) <= HEADER_SIZE + 1 + 4 * len(values)
    assert decode(data).value == values


@given(st.lists(st.floats(width=32), min_size=1, max_size=300))
def test_float32_arrays_round_trip_bit_for_bit(values: list[float]) -> None:
    """An array('f') (NaN and infinities included) reads back as a read-only float32 view with the same bytes."""
    packed = array("f", values)
    found = decode(encode(packed)).value
    assert isinstance(found, memoryview)
    assert (found.format, found.readonly) == ("f", True)
    assert found.tobytes() == packed.tobytes()


def test_a_1536_d_embedding_fits_redis_6144_byte_allocation() -> None:
    """A unit-norm 1536-d embedding is stored in at most 6,138 bytes: jemalloc's 6144 class with the sds header."""
    rng = random.Random(7)
    raw = [rng.gauss(0, 1) for _ in range(1536)]
    norm = sum(x * x for x in raw) ** 0.5
    vector = array("f", [x / norm for x in raw])
    assert len(encode(vector)) <= 6138
    assert decode(encode(vector.tolist())).value == vector.tolist()


def test_floats_that_float32_cannot_hold_are_kept_exact() -> None:
    """Doubles that float32 would round are stored as JSON, so nothing is silently changed."""
    assert decode(encode([0.1, 0.2])).value == [0.1, 0.2]


@pytest.mark.parametrize(
    "value", [b"\x00raw", "text ünïcode", {"a": [1, 2.5, None, True]}, [1, "two"], 7, None, [], {"nested": {"x": []}}]
)
def test_values_round_trip(value: object) -> None:
    """bytes, str and JSON values read back as written."""
    assert decode(encode(value)).value == value


def test_expiry_and_delta_are_carried() -> None:
    """The envelope carries the expiry time and compute time for early refresh."""
    entry = decode(encode("v", expires_at=1234.5, delta=0.25))
    assert (entry.expires_at, entry.delta) == (1234.5, 0.25)


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", struct.pack("<BBdf", 9, ord("J"), 0, 0) + b"1", struct.pack("<BBdf", 1, ord("Q"), 0, 0),
     struct.pack("<BBdf", 1, ord("J"), 0, 0) + b"{nope", struct.pack("<BBdf", 1, ord("S"), 0, 0) + b"\xff\xfe",
     struct.pack("<BBdf", 1, ord("F"), 0, 0) + b"abc", struct.pack("<BBdf", 1, ord("A"), 0, 0) + b"\x01\x09",
     struct.pack("<BBdf", 1, ord("A"), 0, 0) + b"\x01" + struct.pack("<I", 64) + b"x" * 192 + b"not deflate",
     struct.pack("<BBdf", 1, ord("A"), 0, 0) + b"\x07abcd"],
)  # fmt: skip
def test_foreign_or_corrupt_bytes_are_refused(data: bytes) -> None:
    """Bytes that are not one of our envelopes raise CorruptValueError (the manager reads it as a miss)."""
    with pytest.raises(CorruptValueError):
        decode(data)


def test_values_without_safe_serialization_are_refused() -> None:
    """Objects orjson cannot encode are refused rather than pickled."""
    with pytest.raises(UnsupportedValueError):
        encode(object())
    with pytest.raises(UnsupportedValueError):
        encode({1: math.inf, "set": {1, 2}})
