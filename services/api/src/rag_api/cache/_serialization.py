"""A versioned envelope for stored values: a fixed header, then the payload. No pickle.

Header (14 bytes, little-endian): version, kind, expires_at (unix seconds, 0 = none), delta (seconds the
value took to compute, for early refresh). Kinds: raw bytes, UTF-8 str, packed float32 list, orjson.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from ._errors import CorruptValueError, UnsupportedValueError

VERSION = 1
_HEADER = struct.Struct("<BBdf")
HEADER_SIZE = _HEADER.size
_BIG_ENDIAN = sys.byteorder == "big"
_BYTES, _STR, _FLOAT32, _JSON = b"B"[0], b"S"[0], b"F"[0], b"J"[0]


@dataclass(frozen=True, slots=True)
class Entry:
    value: Any
    expires_at: float
    delta: float


def _float32_exact(value: list[Any]) -> array[float] | None:
    """The packed array when every item is a float that float32 holds exactly, else None."""
    if not value or any(type(x) is not float for x in value):
        return None
    packed = array("f", value)
    return packed if packed.tolist() == value else None


def encode(value: Any, *, expires_at: float = 0.0, delta: float = 0.0) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        kind, payload = _BYTES, bytes(value)
    elif isinstance(value, str):
        kind, payload = _STR, value.encode("utf-8", "surrogatepass")
    elif type(value) is list and (packed := _float32_exact(value)) is not None:
        if packed.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte C floats
            raise UnsupportedValueError("this platform's C float is not 32 bits")
        if _BIG_ENDIAN:  # pragma: no cover - stored floats are little-endian, as OpenAI's base64 is
            packed.byteswap()
        kind, payload = _FLOAT32, packed.tobytes()
    else:
        try:
            kind, payload = _JSON, orjson.dumps(value)
        except TypeError as exc:
            raise UnsupportedValueError(f"cannot cache a {type(value).__name__}: {exc}") from exc
    return _HEADER.pack(VERSION, kind, expires_at, delta) + payload


def decode(data: bytes) -> Entry:
    """The stored value; anything that is not one of our envelopes raises CorruptValueError."""
    if len(data) < HEADER_SIZE:
        raise CorruptValueError("shorter than the envelope header")
    version, kind, expires_at, delta = _HEADER.unpack_from(data)
    if version != VERSION:
        raise CorruptValueError(f"envelope version {version} is not {VERSION}")
    payload = data[HEADER_SIZE:]
    try:
        if kind == _BYTES:
            value: Any = payload
        elif kind == _STR:
            value = payload.decode("utf-8", "surrogatepass")
        elif kind == _FLOAT32 and len(payload) % 4 == 0:
            floats: array[float] = array("f")
            floats.frombytes(payload)
            if _BIG_ENDIAN:  # pragma: no cover
                floats.byteswap()
            value = floats.tolist()
        elif kind == _JSON:
            value = orjson.loads(payload)
        else:
            raise CorruptValueError(f"unknown envelope kind {kind}")
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise CorruptValueError(str(exc)) from exc
    return Entry(value, expires_at, delta)
