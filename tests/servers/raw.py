"""The HTTP/1.1 wire, read by hand, for test servers that misbehave below what a framework allows
(a body trickled byte by byte, a canned status, a chosen content encoding)."""

from __future__ import annotations

import asyncio

__all__ = ["read_request"]


async def read_request(reader: asyncio.StreamReader) -> dict[bytes, str]:
    """Read one request (head and body) off ``reader``; return its header fields, names lowered.

    Raises ``asyncio.IncompleteReadError`` when the client closes the connection.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    fields: dict[bytes, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name:
            fields[name.strip().lower()] = value.strip().decode("latin-1")
    await reader.readexactly(int(fields.get(b"content-length", "0")))
    return fields
