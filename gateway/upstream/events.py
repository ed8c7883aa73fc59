"""Server-sent events as the upstream sends them: a byte stream cut into whole events."""

from __future__ import annotations

import re

# An event ends with a blank line; the spec allows all three line endings.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class EventSplitter:
    """Cuts a byte stream into whole SSE events, each kept byte for byte with its blank line."""

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self.rest += chunk
        events = []
        start = 0
        for match in _EVENT_END.finditer(self.rest):
            events.append(self.rest[start : match.end()])
            start = match.end()
        self.rest = self.rest[start:]
        return events


def event_data(event: bytes) -> bytes:
    if b"\r" not in event and event.startswith(b"data: ") and event.count(b"\n") == 2:
        # The usual shape, one `data: ` line and the blank line: no need to split lines.
        return event[6:-2]
    lines = event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    return b"\n".join(data)
