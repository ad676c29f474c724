"""Cache keys of the cached routes: a SHA-256 digest of a typed, length-prefixed encoding of the request.

Every value is written with a type tag and, where its length varies, its length first (`s5:hello`,
`t3:7,8,9`, `l2:...`), so the encoding is prefix-free: two different requests never encode alike, whatever
their strings contain (a string cannot pose as a token array, a list or another field), and equal ones always
do (object members in sorted order). Keys start with their kind (`emb:`, `chat:`); a namespace (the request's
`cache.namespace`) goes first as `ns:<digest>:`, which no un-namespaced key starts with.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["KeyEncodingError", "chat_key", "embedding_key", "encode_value", "namespaced"]


class KeyEncodingError(ValueError):
    """A value that has no canonical encoding: NaN or infinity, a lone surrogate, a non-JSON type."""


def _text(tag: bytes, text: str) -> bytes:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise KeyEncodingError("text is not valid Unicode (lone surrogate)") from exc
    return tag + b"%d:" % len(data) + data


def encode_value(value: Any) -> bytes:
    """The typed encoding of a JSON value (None, bool, int, float, str, list, dict with str keys)."""
    if value is None:
        return b"n"
    if value is True:
        return b"T"
    if value is False:
        return b"F"
    if isinstance(value, int):
        return b"i%d;" % value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KeyEncodingError("NaN and infinity are not JSON numbers")
        return b"d" + repr(value).encode() + b";"
    if isinstance(value, str):
        return _text(b"s", value)
    if isinstance(value, list | tuple):
        return b"l%d:" % len(value) + b"".join(encode_value(v) for v in value)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise KeyEncodingError("object keys must be strings")
        members = sorted(value.items())
        return b"m%d:" % len(members) + b"".join(_text(b"s", k) + encode_value(v) for k, v in members)
    raise KeyEncodingError(f"{type(value).__name__} is not a JSON value")


def _embedding_input(item: str | Sequence[int]) -> bytes:
    if isinstance(item, str):
        return _text(b"s", item)
    return b"t%d:" % len(item) + b",".join(b"%d" % t for t in item)


def embedding_key(model: str, dimensions: int | None, item: str | Sequence[int]) -> str:
    """The key of one embedding input (a text or a token array) for a model and a dimension count."""
    data = _text(b"s", model) + b"i%d;" % (dimensions or 0) + _embedding_input(item)
    return "emb:" + hashlib.sha256(data).hexdigest()


def chat_key(request: dict[str, Any]) -> str:
    """The key of a chat request: every member given (the caller drops those that never change the answer)."""
    return "chat:" + hashlib.sha256(encode_value(request)).hexdigest()


def namespaced(namespace: str | None, key: str) -> str:
    """`key` within a namespace of the school's entries (None: the school's default entries)."""
    if namespace is None:
        return key
    return f"ns:{hashlib.sha256(_text(b's', namespace)).hexdigest()[:32]}:{key}"
