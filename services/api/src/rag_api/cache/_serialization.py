"""A versioned envelope for stored values: a fixed header, then the payload. No pickle.

Header (14 bytes, little-endian): version, kind, expires_at (unix seconds, 0 = none), delta (seconds the
value took to compute, for early refresh). Kinds: raw bytes, UTF-8 str, orjson, and float32 vectors (read
back as a list, or as `array('f')` when one was stored).

Float32 vectors are lossless but compact. The high byte of a float is its sign and most of its exponent,
which take few values in an embedding: in the first 128 floats they are written as 4-bit codes into a
16-byte alphabet, and the rest of the vector is stored as it is. That saves 27 bytes net, which is what it
takes to move a 1536-d embedding (6144 bytes of floats) from jemalloc's 7168-byte size class in Redis into
the 6144-byte one, and it decodes with a few C-level byte operations (deflate saved more, but landed in the
same size class and cost three times as much to read). A vector whose prefix has more than 16 distinct high
bytes is stored plain.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from ._errors import CorruptValueError, UnsupportedValueError

VERSION = 1
_HEADER = struct.Struct("<BBdf")
HEADER_SIZE = _HEADER.size
_BIG_ENDIAN = sys.byteorder == "big"
_BYTES, _STR, _FLOAT32, _ARRAY, _JSON = b"B"[0], b"S"[0], b"F"[0], b"A"[0], b"J"[0]
_PLAIN, _SPLIT = 0, 1  # float payload layouts: raw little-endian float32, or low bytes + deflated high bytes
_SPLIT_MIN = 64


class Entry(NamedTuple):
    """A decoded value with its expiry (unix seconds, 0 = none) and how long it took to compute."""

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


_SPLIT_HEAD = struct.Struct("<IH")  # floats in all, floats in the packed prefix (even)
_PREFIX = 128  # 1536-d: 6117 bytes in all, under the 6138 that fit the 6144-byte class with Redis's sds header
_ALPHABET = 16
# Unpacking a byte of two 4-bit codes: its high nibble, its low nibble.
_HIGH_NIBBLE = bytes(b >> 4 for b in range(256))
_LOW_NIBBLE = bytes(b & 15 for b in range(256))
_PAD = bytes(256 - _ALPHABET)


def pack_floats(packed: array[float], *, compact: bool = True) -> bytes:
    """A float32 vector as its payload: a packed prefix when compact and possible, else plain."""
    if _BIG_ENDIAN:  # pragma: no cover - stored floats are little-endian, as OpenAI's base64 is
        packed = array("f", packed)
        packed.byteswap()
    raw = packed.tobytes()
    count = len(packed)
    head = min(count, _PREFIX) & ~1
    if compact and count >= _SPLIT_MIN:
        prefix = raw[: 4 * head]
        high = prefix[3::4]
        alphabet = sorted(set(high))
        if len(alphabet) <= _ALPHABET:
            code = bytes(alphabet.index(b) if b in alphabet else 0 for b in range(256))
            codes = high.translate(code)
            nibbles = bytes((a << 4) | b for a, b in zip(codes[0::2], codes[1::2], strict=True))
            low = bytearray(3 * head)
            low[0::3], low[1::3], low[2::3] = prefix[0::4], prefix[1::4], prefix[2::4]
            letters = bytes(alphabet) + bytes(_ALPHABET - len(alphabet))
            return bytes((_SPLIT,)) + _SPLIT_HEAD.pack(count, head) + letters + nibbles + low + raw[4 * head :]
    return bytes((_PLAIN,)) + raw


def _plain_envelope(data: bytes) -> bytearray:
    """The plain-layout envelope of a float envelope in either layout, built in one buffer."""
    payload = memoryview(data)[HEADER_SIZE:]
    layout = payload[0] if len(payload) else -1
    if layout == _PLAIN and len(payload) % 4 == 1:
        return bytearray(data)
    if layout != _SPLIT or len(payload) < 1 + _SPLIT_HEAD.size:
        raise CorruptValueError("unknown float layout")
    count, head = _SPLIT_HEAD.unpack_from(payload, 1)
    letters_at = 1 + _SPLIT_HEAD.size
    nibbles_at = letters_at + _ALPHABET
    low_at = nibbles_at + head // 2
    rest_at = low_at + 3 * head
    if head > count or head % 2 or rest_at + 4 * (count - head) != len(payload):
        raise CorruptValueError("float layout sizes do not add up")
    nibbles = payload[nibbles_at:low_at].tobytes()
    codes = bytearray(head)
    codes[0::2], codes[1::2] = nibbles.translate(_HIGH_NIBBLE), nibbles.translate(_LOW_NIBBLE)
    high = codes.translate(payload[letters_at:nibbles_at].tobytes() + _PAD)
    out = bytearray(HEADER_SIZE + 1 + 4 * count)
    out[:HEADER_SIZE] = data[:HEADER_SIZE]
    out[HEADER_SIZE] = _PLAIN
    at = HEADER_SIZE + 1
    end = at + 4 * head
    low = payload[low_at:rest_at].tobytes()
    out[at:end:4], out[at + 1 : end : 4], out[at + 2 : end : 4] = low[0::3], low[1::3], low[2::3]
    out[at + 3 : end : 4] = high
    out[end:] = payload[rest_at:]
    return out


def _floats(raw: memoryview) -> array[float]:
    floats: array[float] = array("f")
    floats.frombytes(raw)
    if _BIG_ENDIAN:  # pragma: no cover
        floats.byteswap()
    return floats


def encode(value: Any, *, expires_at: float = 0.0, delta: float = 0.0, compact: bool = True) -> bytes:
    """The envelope of `value`; `compact=False` keeps float vectors plain (the memory tier: fast to read)."""
    if isinstance(value, memoryview) and value.format == "f":  # a vector read from the cache, stored again
        kind, payload = _ARRAY, pack_floats(array("f", value.tobytes()), compact=compact)
    elif isinstance(value, bytes | bytearray | memoryview):
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


class Stored(NamedTuple):
    """A value as the memory tier keeps it, ready to hand out without copying: `value` is immutable (bytes,
    str, a read-only memoryview of float32, or JSON text) and `thaw`, when set, makes each reader its own
    mutable copy (a dict from JSON, a list from float32). `size` is what it weighs in the memory tier."""

    value: Any
    expires_at: float
    delta: float
    thaw: Callable[[Any], Any] | None
    size: int

    def read(self) -> Any:
        return self.value if self.thaw is None else self.thaw(self.value)


def _tolist(view: memoryview[float]) -> list[float]:
    return view.tolist()  # type: ignore[return-value]


def _json(text: bytes) -> Any:
    return orjson.loads(text)


def decode(data: bytes) -> Entry:
    """The stored value; anything that is not one of our envelopes raises CorruptValueError.

    Float32 vectors stored as `array('f')` come back as a read-only `memoryview` of format "f" over the
    stored bytes (no copy: `.tolist()` gives floats, the buffer is OpenAI's base64 payload); vectors stored
    as a list of floats come back as a list."""
    stored = stored_form(data)
    return Entry(stored.read(), stored.expires_at, stored.delta)


def stored_form(data: bytes) -> Stored:
    """The memory tier's form of an envelope (a compact float vector is expanded once, here)."""
    if len(data) < HEADER_SIZE:
        raise CorruptValueError("shorter than the envelope header")
    version, kind, expires_at, delta = _HEADER.unpack_from(data)
    if version != VERSION:
        raise CorruptValueError(f"envelope version {version} is not {VERSION}")
    thaw: Callable[[Any], Any] | None = None
    try:
        if kind in (_ARRAY, _FLOAT32):
            if len(data) > HEADER_SIZE and data[HEADER_SIZE] == _SPLIT:
                data = bytes(_plain_envelope(data))
            elif len(data) <= HEADER_SIZE or data[HEADER_SIZE] != _PLAIN or len(data) % 4 != (HEADER_SIZE + 1) % 4:
                raise CorruptValueError("unknown float layout")
            value: Any = _float_view(data)
            if kind == _FLOAT32:
                thaw = _tolist
        elif kind == _BYTES:
            value = data[HEADER_SIZE:]
        elif kind == _STR:
            value = data[HEADER_SIZE:].decode("utf-8", "surrogatepass")
        elif kind == _JSON:
            value = data[HEADER_SIZE:]
            orjson.loads(value)  # refuse corrupt JSON now, not at every read
            thaw = _json
        else:
            raise CorruptValueError(f"unknown envelope kind {kind}")
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise CorruptValueError(str(exc)) from exc
    return Stored(value, expires_at, delta, thaw, len(data))


def _float_view(plain: bytes) -> memoryview[float]:
    if _BIG_ENDIAN:  # pragma: no cover - stored floats are little-endian: swap into a copy
        return memoryview(bytes(_floats(memoryview(plain)[HEADER_SIZE + 1 :]))).cast("f")
    return memoryview(plain)[HEADER_SIZE + 1 :].cast("f")
