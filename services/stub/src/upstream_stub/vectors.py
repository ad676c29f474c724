"""Deterministic unit vectors derived from (model, text), every component exactly representable in float32."""

from __future__ import annotations

import hashlib
import math
import sys
from array import array

__all__ = ["chat_answer", "embedding_bytes", "embedding_vector"]

if array("f").itemsize != 4 or array("I").itemsize != 4:  # pragma: no cover - not on CPython's platforms
    raise RuntimeError("array('f') / array('I') are not 4 bytes wide on this platform")


def embedding_bytes(model: str, text: str, dim: int) -> bytes:
    """Little-endian float32 bytes of the unit vector for (model, text): what OpenAI's base64 carries."""
    seed = hashlib.sha256(f"{model}\x00{text}".encode()).digest()
    blocks = (dim * 4 + 31) // 32
    words = array("I", b"".join(hashlib.sha256(seed + i.to_bytes(4, "little")).digest() for i in range(blocks)))
    comps = [w / 2**31 - 1.0 for w in words[:dim]]
    norm = math.sqrt(math.fsum(c * c for c in comps)) or 1.0
    packed = array("f", [c / norm for c in comps])
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts only
        packed.byteswap()
    return packed.tobytes()


def embedding_vector(model: str, text: str, dim: int) -> list[float]:
    """The same vector as Python floats, each exactly a float32 value."""
    packed = array("f")
    packed.frombytes(embedding_bytes(model, text, dim))
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts only
        packed.byteswap()
    return packed.tolist()


def chat_answer(model: str, messages: list[dict[str, object]], extra: object = None, *, length: int = 0) -> str:
    """A deterministic answer: a digest of everything that shapes it, then an echo of the last user message;
    padded with filler words to `length` characters when it is shorter."""
    digest = hashlib.sha256(repr((model, messages, extra)).encode()).hexdigest()[:12]
    last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    text = last if isinstance(last, str) else repr(last)
    answer = f"[stub {digest}] You asked: {text[:200]}"
    if len(answer) < length:
        filler = " The cached answer goes on, word after word, as a long completion would."
        answer = (answer + filler * (1 + (length - len(answer)) // len(filler)))[:length]
    return answer
