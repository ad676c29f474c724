"""Cache keys: different requests never share a key, equal requests always do, whatever their strings hold."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from rag_api.request_keys import chat_key, embedding_key, namespaced

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)
tokens = st.lists(st.integers(0, 2**32 - 1), max_size=6)
# Text that likes to look like other inputs: separators, digits, the old token marker, NUL.
tricky_text = st.lists(st.sampled_from(["\x00", "tokens:", ",", ":", "7", "8", "s", "t", "3", "a", "é"])).map("".join)
embedding_inputs = st.one_of(st.text(max_size=12), tricky_text, tokens)
embedding_requests = st.tuples(
    st.sampled_from(["m", "m:0", "m:1", "", "0"]), st.sampled_from([None, 1, 8, 10]), embedding_inputs
)


def typed(value: Any) -> Any:
    """A reference notion of JSON equality that keeps types apart (1, 1.0 and True are different requests)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, typed(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("list", tuple(typed(v) for v in value))
    return (type(value).__name__, repr(value))


def embedding_identity(request: tuple[str, int | None, str | list[int]]) -> Any:
    model, dims, item = request
    return (model, dims or 0, typed(item))


def test_a_string_cannot_take_a_token_arrays_key() -> None:
    """Finding 1: the text "\\0tokens:7,8,9" and the token array [7, 8, 9] have different keys."""
    assert embedding_key("m", None, "\x00tokens:7,8,9") != embedding_key("m", None, [7, 8, 9])


@given(a=embedding_requests, b=embedding_requests)
def test_embedding_keys_collide_only_for_equal_requests(a: Any, b: Any) -> None:
    """Two embedding requests (model, dimensions, text or tokens) share a key exactly when they are equal."""
    assert (embedding_key(*a) == embedding_key(*b)) == (embedding_identity(a) == embedding_identity(b))


@given(a=json_values, b=json_values)
def test_chat_keys_collide_only_for_equal_requests(a: Any, b: Any) -> None:
    """Two chat requests share a key exactly when they are the same JSON value, member order aside."""
    ra, rb = {"model": "g", "messages": a}, {"messages": b, "model": "g"}
    assert (chat_key(ra) == chat_key(rb)) == (typed(ra) == typed(rb))


@given(value=json_values)
def test_member_order_does_not_change_a_chat_key(value: Any) -> None:
    """Equal requests always share a key: members in another order are the same request."""
    request = {"model": "g", "messages": [{"role": "user", "content": value}], "temperature": 0.5}
    assert chat_key(request) == chat_key(dict(reversed(list(request.items()))))


@given(ns=st.none() | tricky_text, other=st.none() | tricky_text, key=st.sampled_from(["emb:x", "chat:x"]))
def test_namespaces_partition_keys(ns: str | None, other: str | None, key: str) -> None:
    """A namespaced key never equals an un-namespaced one or one of another namespace."""
    assert (namespaced(ns, key) == namespaced(other, key)) == (ns == other)
