"""Server-sent events as the upstream sends them: a byte stream cut into whole events."""

from __future__ import annotations

import re

# An event ends with a blank line; the spec allows all three line endings.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")

# Far above any real event (a chunk of a few tokens); an upstream that sends more is broken.
MAX_EVENT_BYTES = 1024 * 1024


class EventTooLarge(Exception):
    """The upstream sent more than MAX_EVENT_BYTES without ending an event."""


class EventSplitter:
    """Cuts a byte stream into whole SSE events, each kept byte for byte with its blank line.

    Each byte is searched about once: a new chunk is searched from just before where the last
    search ended (an event's end may straddle two chunks), never from the start of the buffer.
    """

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self.buffer = bytearray()
        self.searched = 0
        self.limit = limit

    @property
    def rest(self) -> bytes:
        return bytes(self.buffer)

    def feed(self, chunk: bytes) -> list[bytes]:
        if not self.buffer and b"\r" not in chunk:
            # Nothing held over and only LF line ends, the usual case: each "\n\n", left to
            # right, ends an event, as the pattern would find them.
            *whole, rest = chunk.split(b"\n\n")
            self.buffer += rest
            self.searched = len(rest)
            if self.searched > self.limit:
                raise EventTooLarge()
            return [event + b"\n\n" for event in whole]
        self.buffer += chunk
        events = []
        start = 0
        # The longest end, \r\n\r\n, is 4 bytes: 3 of them may precede the new chunk.
        for match in _EVENT_END.finditer(self.buffer, max(0, self.searched - 3)):
            events.append(bytes(self.buffer[start : match.end()]))
            start = match.end()
        del self.buffer[:start]
        self.searched = len(self.buffer)
        if self.searched > self.limit:
            raise EventTooLarge()
        return events


def event_data(event: bytes) -> bytes:
    if b"\r" not in event and event.startswith(b"data: ") and event.count(b"\n") == 2:
        # The usual shape, one `data: ` line and the blank line: no need to split lines.
        return event[6:-2]
    lines = event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    return b"\n".join(data)
