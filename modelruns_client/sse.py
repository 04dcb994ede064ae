"""An incremental parser of `text/event-stream` as the WHATWG HTML standard defines it: bytes in,
in chunks cut anywhere, messages out."""

from __future__ import annotations

import re
from dataclasses import dataclass

_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class SseMessage:
    data: str
    # The stream's last event id when the message was dispatched (it carries over from earlier ones).
    id: str | None = None
    event: str = "message"


class SseParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._after_cr = False  # a chunk ended in CR: a LF starting the next one is the same line end
        self._first_line = True
        self._data: list[str] = []
        self._event = ""
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SseMessage]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = False
        buffer = self._buffer + chunk
        messages: list[SseMessage] = []
        start = 0
        for match in _EOL.finditer(buffer):
            message = self._line(buffer[start : match.start()])
            if message is not None:
                messages.append(message)
            start = match.end()
            if match.group() == b"\r" and start == len(buffer):
                self._after_cr = True
        self._buffer = buffer[start:]
        return messages

    def _line(self, raw: bytes) -> SseMessage | None:
        line = raw.decode("utf-8", errors="replace")
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseMessage | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseMessage(data="\n".join(data), id=self.last_id, event=event or "message")
