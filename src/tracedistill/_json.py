"""JSON encoding that is fast (orjson) and exact for integers beyond 64 bits (stdlib fallback).

Benchmark data holds such integers (14 MBPP+ tasks): orjson refuses to encode them and decodes
them as floats, which would silently change a test's expected value. Lines that may hold one
(a run of 19+ digits) go through the standard library instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["dumps", "loads"]

# 2**63 has 19 digits: any integer orjson could mishandle has a run at least this long.
_LONG_DIGITS = re.compile(rb"\d{19,}")


def loads(data: bytes | str) -> Any:
    """Parse JSON, keeping integers of any size exact."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw):
        return json.loads(raw)
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
        return text.encode() + (b"\n" if newline else b"")
