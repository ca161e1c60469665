"""JSON encoding that is fast (orjson) and exact for integers beyond 64 bits (stdlib fallback).

Benchmark data holds such integers (14 MBPP+ tasks): orjson refuses to encode them and decodes
them as floats, which would silently change a test's expected value. Whatever orjson can encode
it also decodes exactly, so :func:`dumps` falls back to the standard library only when orjson
refuses, and marks such an object (a last key ``"_exact_ints": true``) so that :func:`loads`
knows, without scanning the line, to parse it with the standard library too.
:func:`loads_external` reads JSON written by others, checking for long digit runs instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["dumps", "loads", "loads_external"]

_MARK_KEY = "_exact_ints"
_MARK = b'"_exact_ints":true}'
# 2**63 has 19 digits: any integer orjson could mishandle has a run at least this long.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def loads(data: bytes | str) -> Any:
    """Parse JSON written by :func:`dumps`, keeping integers of any size exact."""
    raw = data.encode() if isinstance(data, str) else data
    if _MARK in raw[-24:]:
        value = json.loads(raw)
        if isinstance(value, dict):
            value.pop(_MARK_KEY, None)
        return value
    return orjson.loads(raw)


def loads_external(data: bytes | str) -> Any:
    """Parse JSON from elsewhere, keeping integers of any size exact (slower than loads)."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw):
        value = json.loads(raw)
        if isinstance(value, dict):
            value.pop(_MARK_KEY, None)
        return value
    return orjson.loads(raw)


def dumps(value: Any, *, sort_keys: bool = False, newline: bool = False) -> bytes:
    """Serialize to compact UTF-8 JSON; integers beyond 64 bits are written exactly."""
    option = (orjson.OPT_SORT_KEYS if sort_keys else 0) | (
        orjson.OPT_APPEND_NEWLINE if newline else 0
    )
    try:
        return orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        text = json.dumps(value, sort_keys=sort_keys, ensure_ascii=False, separators=(",", ":"))
        if isinstance(value, dict) and not sort_keys:
            # Only for stored records; a sorted dump is a hash input and must stay canonical.
            text = text[:-1] + (',"_exact_ints":true}' if value else '"_exact_ints":true}')
        return text.encode() + (b"\n" if newline else b"")
