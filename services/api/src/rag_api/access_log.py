"""Request context and the access log: one line per request (JSON or text, LOG_FORMAT), joined to nginx's
access line by the request id nginx forwards as `X-Request-ID`.

The middleware opens a `RequestRecord` per request in a context variable; the tenant dependency notes the
school and the upstream client adds the time it waited for the model, so the line needs no other lookup. A
task spawned during the request (the single-flight leader) inherits the record, so its model time counts.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from typing import Any, Literal

import orjson

__all__ = [
    "ACCESS_LOGGER",
    "RequestRecord",
    "add_upstream_time",
    "configure_logging",
    "current_request",
    "new_request_id",
    "note_school",
    "valid_request_id",
]

ACCESS_LOGGER = "rag_api.access"
LogFormat = Literal["json", "text"]

_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("rag_request", default=None)
_ID_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:")


class RequestRecord:
    """What one request's access line says beyond its status and headers."""

    __slots__ = ("request_id", "school", "upstream_seconds")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.school: int | None = None
        self.upstream_seconds = 0.0


def current_request() -> RequestRecord | None:
    return _current.get()


def open_request(record: RequestRecord) -> contextvars.Token[RequestRecord | None]:
    return _current.set(record)


def close_request(token: contextvars.Token[RequestRecord | None]) -> None:
    _current.reset(token)


def note_school(school: int) -> None:
    """Record the school the request acts for (called where the tenant is resolved)."""
    record = _current.get()
    if record is not None:
        record.school = school


def add_upstream_time(seconds: float) -> None:
    """Add time spent waiting for the model to the current request's record."""
    record = _current.get()
    if record is not None:
        record.upstream_seconds += seconds


def new_request_id() -> str:
    """A fresh id, for requests that reach a replica without one (nginx always sends one)."""
    return os.urandom(16).hex()


def valid_request_id(raw: bytes) -> str | None:
    """A client's or nginx's id, if it is short and plain enough to log and echo unchanged."""
    if 0 < len(raw) <= 128 and all(c in _ID_CHARS for c in raw):
        return raw.decode("ascii")
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an access line's fields at top level."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        if record.name == ACCESS_LOGGER and isinstance(record.args, dict):
            fields.update(record.args)
        else:
            fields["msg"] = record.getMessage()
            if record.exc_info:
                fields["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(fields).decode()


class TextFormatter(logging.Formatter):
    """The human form: `time level [pid] logger: message`, an access line as `key=value` pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER and isinstance(record.args, dict):
            pairs = " ".join(f"{k}={v}" for k, v in record.args.items())
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            return f"{stamp} access [{record.process}] {pairs}"
        return super().format(record)


def configure_logging(level: str, fmt: LogFormat, *, access: bool) -> None:
    """The `rag_api` loggers on stderr in `fmt`; the access logger at INFO whatever LOG_LEVEL says, or off."""
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    root = logging.getLogger("rag_api")
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
        root.propagate = False
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level.upper())
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access else logging.CRITICAL + 1)
