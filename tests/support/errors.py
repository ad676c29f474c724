"""Reading error answers the way clients do: OpenAI's envelope on `/v1/*`, `{"detail": ...}` elsewhere."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["error_body", "error_message"]


def error_body(path: str, content: bytes) -> Any:
    """The error's message (or FastAPI's detail list), asserting the shape the contract gives `path`."""
    body = orjson.loads(content)
    if path.startswith("/v1/"):
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str), error
        assert error["message"], error
        assert isinstance(error["type"], str), error
        return error["message"]
    assert set(body) == {"detail"}, body
    assert body["detail"], body
    return body["detail"]


def error_message(res: Any) -> str:
    """The error text of an httpx/requests response, checked against its route's shape."""
    return str(error_body(res.request.url.path, res.content))
