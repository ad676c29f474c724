"""A versioned envelope for stored values: a fixed header, then the payload. No pickle.

Header (14 bytes, little-endian): version, kind, expires_at (unix seconds, 0 = none), delta (seconds the
value took to compute, for early refresh). Kinds: raw bytes, UTF-8 str, orjson, and float32 vectors (read
back as a list, or as `array('f')` when one was stored).

Float32 vectors are lossless but compact. The high bytes (sign and most of the exponent, which barely vary
in an embedding) of the first 256 floats are deflated; the rest is stored as it is. That saves about 120
bytes, which is what it takes to move a 1536-d embedding (6144 bytes of floats) from jemalloc's 7168-byte
size class in Redis into the 6144-byte one, while keeping the decode cheap: deflating every high byte
would save 700 bytes more but land in the same size class and cost three times as much to read.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from ._errors import CorruptValueError, UnsupportedValueError

VERSION = 1
_HEADER = struct.Struct("<BBdf")
HEADER_SIZE = _HEADER.size
_BIG_ENDIAN = sys.byteorder == "big"
_BYTES, _STR, _FLOAT32, _ARRAY, _JSON = b"B"[0], b"S"[0], b"F"[0], b"A"[0], b"J"[0]
_PLAIN, _SPLIT = 0, 1  # float payload layouts: raw little-endian float32, or low bytes + deflated high bytes
_SPLIT_MIN = 64


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
    if packed.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte C floats
        return None
    return packed if packed.tolist() == value else None


_SPLIT_HEAD = struct.Struct("<IH")  # floats in all, floats in the split prefix
_PREFIX = 256


def pack_floats(packed: array[float], *, compact: bool = True) -> bytes:
    """A float32 vector as its payload: split prefix when compact and worth it, else plain."""
    if _BIG_ENDIAN:  # pragma: no cover - stored floats are little-endian, as OpenAI's base64 is
        packed = array("f", packed)
        packed.byteswap()
    raw = packed.tobytes()
    count = len(packed)
    if compact and count >= _SPLIT_MIN:
        head = min(count, _PREFIX)
        prefix = raw[: 4 * head]
        low = bytearray(3 * head)
        low[0::3], low[1::3], low[2::3] = prefix[0::4], prefix[1::4], prefix[2::4]
        high = zlib.compress(prefix[3::4], 9, wbits=-15)
        if _SPLIT_HEAD.size + len(high) < head:
            return bytes((_SPLIT,)) + _SPLIT_HEAD.pack(count, head) + low + raw[4 * head :] + high
    return bytes((_PLAIN,)) + raw


def _raw_floats(payload: memoryview) -> bytearray | memoryview:
    """The little-endian float32 bytes of a float payload, whichever its layout."""
    layout = payload[0] if len(payload) else -1
    if layout == _SPLIT and len(payload) >= 1 + _SPLIT_HEAD.size:
        count, head = _SPLIT_HEAD.unpack_from(payload, 1)
        low_at = 1 + _SPLIT_HEAD.size
        rest_at = low_at + 3 * head
        high_at = rest_at + 4 * (count - head)
        if head > count or high_at > len(payload):
            raise CorruptValueError("float layout sizes do not add up")
        low = bytes(payload[low_at:rest_at])
        high = zlib.decompress(payload[high_at:], wbits=-15, bufsize=head or 1)
        if len(high) != head:
            raise CorruptValueError("float planes of different lengths")
        raw = bytearray(4 * count)
        raw[0 : 4 * head : 4], raw[1 : 4 * head : 4], raw[2 : 4 * head : 4] = low[0::3], low[1::3], low[2::3]
        raw[3 : 4 * head : 4] = high
        raw[4 * head :] = payload[rest_at:high_at]
        return raw
    if layout == _PLAIN and len(payload) % 4 == 1:
        return payload[1:]
    raise CorruptValueError("unknown float layout")


def _floats(raw: bytes | bytearray | memoryview) -> array[float]:
    floats: array[float] = array("f")
    floats.frombytes(raw)
    if _BIG_ENDIAN:  # pragma: no cover
        floats.byteswap()
    return floats


def encode(value: Any, *, expires_at: float = 0.0, delta: float = 0.0, compact: bool = True) -> bytes:
    """The envelope of `value`; `compact=False` keeps float vectors plain (the memory tier: fast to read)."""
    if isinstance(value, bytes | bytearray | memoryview):
        kind, payload = _BYTES, bytes(value)
    elif isinstance(value, str):
        kind, payload = _STR, value.encode("utf-8", "surrogatepass")
    elif isinstance(value, array) and value.typecode == "f":
        kind, payload = _ARRAY, pack_floats(value, compact=compact)
    elif type(value) is list and (packed := _float32_exact(value)) is not None:
        kind, payload = _FLOAT32, pack_floats(packed, compact=compact)
    else:
        try:
            kind, payload = _JSON, orjson.dumps(value)
        except TypeError as exc:
            raise UnsupportedValueError(f"cannot cache a {type(value).__name__}: {exc}") from exc
    return _HEADER.pack(VERSION, kind, expires_at, delta) + payload


def decode(data: bytes) -> Entry:
    """The stored value; anything that is not one of our envelopes raises CorruptValueError."""
    return decode_for_memory(data)[0]


def decode_for_memory(data: bytes) -> tuple[Entry, bytes]:
    """The stored value, and the envelope the memory tier should keep for it: the same bytes, except that a
    compact float vector is kept plain there, so memory hits never pay for decompression."""
    if len(data) < HEADER_SIZE:
        raise CorruptValueError("shorter than the envelope header")
    version, kind, expires_at, delta = _HEADER.unpack_from(data)
    if version != VERSION:
        raise CorruptValueError(f"envelope version {version} is not {VERSION}")
    memory_data = data
    try:
        if kind in (_FLOAT32, _ARRAY):
            view = memoryview(data)[HEADER_SIZE:]
            raw = _raw_floats(view)
            floats = _floats(raw)
            value: Any = floats if kind == _ARRAY else floats.tolist()
            if view[0] == _SPLIT:
                memory_data = data[:HEADER_SIZE] + bytes((_PLAIN,)) + bytes(raw)
        elif kind == _BYTES:
            value = data[HEADER_SIZE:]
        elif kind == _STR:
            value = data[HEADER_SIZE:].decode("utf-8", "surrogatepass")
        elif kind == _JSON:
            value = orjson.loads(memoryview(data)[HEADER_SIZE:])
        else:
            raise CorruptValueError(f"unknown envelope kind {kind}")
    except (UnicodeDecodeError, orjson.JSONDecodeError, zlib.error) as exc:
        raise CorruptValueError(str(exc)) from exc
    return Entry(value, expires_at, delta), memory_data
