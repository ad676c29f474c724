"""What one streamed chat answer was, read line by line as it arrives (pure: the caller times and feeds lines).

An OpenAI stream is `data: {chat.completion.chunk}` events ending with `data: [DONE]`. A failure mid-stream
is a `data: {"error": {...}}` event and no [DONE]; a stream that ends any other way (the connection closed
before [DONE]) was cut off. Time to first content chunk (TTFC) is when the first chunk with delta content
arrived, the figure a user waits before text appears.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class StreamTally:
    """Counts the events of one stream; `started` and each `now` are the same clock (perf_counter)."""

    started: float
    first_content: float | None = None
    chunks: int = 0
    content_chunks: int = 0
    done: bool = False
    error: dict[str, Any] | None = None
    not_json: int = 0

    def feed(self, line: bytes | str, now: float) -> None:
        """One line of the body; blank lines, comments and fields other than `data:` are ignored."""
        text = (line.decode("utf-8", "replace") if isinstance(line, bytes) else line).strip()
        if not text.startswith("data:"):
            return
        data = text[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            self.not_json += 1
            return
        if isinstance(event, dict) and "error" in event:
            self.error = event
            return
        self.chunks += 1
        choices = event.get("choices") if isinstance(event, dict) else None
        if any((choice.get("delta") or {}).get("content") for choice in choices or () if isinstance(choice, dict)):
            self.content_chunks += 1
            if self.first_content is None:
                self.first_content = now

    def ttfc_ms(self) -> float | None:
        """Milliseconds from sending to the first content chunk, None when none came."""
        return None if self.first_content is None else 1000 * (self.first_content - self.started)
