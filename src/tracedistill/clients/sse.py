"""Server-sent events: split a byte stream into events, as the WHATWG EventSource spec says.

Only what the providers' streams use: ``event:`` and ``data:`` fields (several ``data:`` lines
join with a newline), comment lines (``: OPENROUTER PROCESSING``) and ``id:``/``retry:`` fields
ignored, lines ending in LF, CRLF or CR, and a blank line dispatching the event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tracedistill.errors import ProviderUnavailableError

__all__ = ["Redact", "SSEDecoder", "event_object", "keep_text", "stream_identity"]

#: Removes secrets (the API key) from a text before it reaches an error message.
Redact = Callable[[str], str]


def keep_text(text: str) -> str:
    """The text unchanged (the redaction used when there is no key to remove)."""
    return text


def stream_identity(name: Any, redact: Redact | None, default: str) -> tuple[str, Redact]:
    """The name a stream assembler reports errors under, and its redaction.

    ``name`` is a string, or (deprecated, the form of earlier releases) the teacher or client
    whose ``name`` and ``redact`` (a client's) or ``_redact`` (a teacher's) to use.
    """
    if not isinstance(name, str):
        redact = redact or getattr(name, "redact", None) or getattr(name, "_redact", None)
        name = str(getattr(name, "name", default))
    return name, redact or keep_text


def event_object(teacher: str, event: str, data: bytes) -> Mapping[str, Any]:
    """Parse one event's data as a JSON object; anything else is a retryable provider error."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderUnavailableError(
            f"{teacher}: stream event {event!r} is not JSON ({len(data)} bytes)"
        ) from None
    if not isinstance(payload, Mapping):
        raise ProviderUnavailableError(f"{teacher}: stream event {event!r} is not an object")
    return payload


class SSEDecoder:
    """Feed bytes as they arrive; get back the events they complete.

    Each event is ``(event name, data)``: the name is ``"message"`` when the event has no
    ``event:`` field; ``data`` is the bytes of its ``data:`` lines joined by newlines.
    """

    __slots__ = ("_buffer", "_data", "_event", "_pending_cr", "comments")

    def __init__(self) -> None:
        self._buffer = b""
        self._event = b""
        self._data: list[bytes] = []
        self._pending_cr = False
        #: comment lines seen (keep-alives such as OpenRouter's ``: OPENROUTER PROCESSING``)
        self.comments = 0

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """Decode ``chunk``; return the events it completed, in order."""
        if self._pending_cr and chunk.startswith(b"\n"):
            # The CR of a CRLF ended the previous chunk: the LF is not a second line end.
            chunk = chunk[1:]
        self._pending_cr = chunk.endswith(b"\r")
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        events: list[tuple[str, bytes]] = []
        for line in lines:
            if not line:
                if self._data or self._event:
                    events.append(self._dispatch())
                continue
            if line[0] == 58:  # b":": a comment
                self.comments += 1
                continue
            name, sep, value = line.partition(b":")
            if sep and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value
        return events

    def _dispatch(self) -> tuple[str, bytes]:
        event = self._event.decode("utf-8", "replace") or "message"
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._event, self._data = b"", []
        return event, data
