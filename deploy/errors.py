"""What can go wrong while driving a stack. Library code raises these; only `python -m deploy.stack`'s
`main()` turns them into a message and an exit status (1; 2 for a runtime that cannot run here).

    StackError
     ├── NotReady             a condition did not hold before its deadline (also a TimeoutError)
     ├── CommandFailed        `docker compose`, supervisord or the stack CLI exited non-zero; carries the output
     ├── RuntimeUnavailable   the runtime asked for cannot run on this machine (no engine, too old, no binary)
     └── StackStateError      the stack is not in a state for that command (already up, no such replica)
"""

from __future__ import annotations


class StackError(Exception):
    """Base of every error the stack code raises on purpose."""


class NotReady(StackError, TimeoutError):
    """A condition did not hold before its deadline."""


class CommandFailed(StackError):
    """An external command exited non-zero; `output` is what it printed (the tail of it)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class RuntimeUnavailable(StackError):
    """The runtime asked for cannot run here; the message says what is missing and how to get it."""


class StackStateError(StackError):
    """The command does not fit the stack's state (a stack already runs, no such replica, nothing is up)."""
