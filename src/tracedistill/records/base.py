"""Schema version, content hashes, time and the enums every record uses."""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import attrs
import orjson

from tracedistill import _json
from tracedistill.errors import RecordError

#: Version of the on-disk and JSON layout of every record. Bumped on incompatible changes.
SCHEMA_VERSION = 1

JSONValue: TypeAlias = (
    bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | tuple[Any, ...] | None
)

_HASH_CHARS = 32  # 128 bits of sha256: no collision in any realistic pool, half the index memory


def _canonical(value: object) -> bytes:
    return _json.dumps(value, sort_keys=True)


_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS  # what _canonical's orjson call uses


def content_hash(value: object, *, prefix: str = "") -> str:
    """Return a stable 128-bit hex digest of a JSON-serializable value (key order ignored)."""
    # _canonical's bytes, with orjson called directly: this runs twice per request (the
    # problem id, the request key); the exact-integer fallback is _canonical itself.
    try:
        data = orjson.dumps(value, option=_SORTED)
    except orjson.JSONEncodeError:
        data = _canonical(value)
    return prefix + hashlib.sha256(data).hexdigest()[:_HASH_CHARS]


def utcnow() -> _dt.datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return _dt.datetime.now(_dt.UTC)


class TaskKind(enum.StrEnum):
    """What kind of answer a problem expects, which decides how it is verified."""

    MATH = "math"
    CODE = "code"


class ReasoningKind(enum.StrEnum):
    """Whether a trace's reasoning is the model's raw chain of thought or a provider summary."""

    RAW = "raw"
    SUMMARY = "summary"
    NONE = "none"


class FinishReason(enum.StrEnum):
    """Why generation stopped."""

    STOP = "stop"
    LENGTH = "length"  # truncated at max_tokens
    CONTENT_FILTER = "content_filter"
    ERROR = "error"  # no usable response: see Trace.error
    OTHER = "other"


class VerdictReason(enum.StrEnum):
    """Why a verifier passed or failed a trace."""

    PASSED = "passed"
    WRONG_ANSWER = "wrong-answer"
    NO_ANSWER = "no-answer"
    INVALID_GOLD = "invalid-gold"
    TRUNCATED = "truncated"
    TIMEOUT = "timeout"
    TEST_FAILED = "test-failed"
    RUNTIME_ERROR = "runtime-error"
    SYNTAX_ERROR = "syntax-error"
    SANDBOX_VIOLATION = "sandbox-violation"
    MEMORY_LIMIT = "memory-limit"
    OUTPUT_LIMIT = "output-limit"
    VERIFIER_ERROR = "verifier-error"


def _check_version(cls: type, data: Mapping[str, Any]) -> None:
    found = data.get("schema", SCHEMA_VERSION)
    if not isinstance(found, int) or isinstance(found, bool) or found > SCHEMA_VERSION:
        raise RecordError(
            f"{cls.__name__} has schema version {found!r}; this tracedistill reads versions up "
            f"to {SCHEMA_VERSION}. Upgrade tracedistill."
        )


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _build(cls: type[Any], data: Mapping[str, Any], **converted: Any) -> Any:
    """Build ``cls`` from a dict, turning attrs/type errors into a RecordError that names cls."""
    _check_version(cls, data)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in attrs.fields(cls))
    unknown = data.keys() - names - {"schema", "type"}
    if unknown:
        raise RecordError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs.update(converted)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"{cls.__name__}: {exc}") from exc


def _to_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    if isinstance(value, str | bytes):
        raise TypeError("expected a sequence, got a string")
    return tuple(value)


def _frozen_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    # Copy so the caller's later mutations never reach a stored record.
    return dict(value or {})


def _non_empty_str(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string, got {value!r:.80}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (value < 0 or (isinstance(value, float) and math.isnan(value))):
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _parse_time(value: _dt.datetime | str | float) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        moment = value
    elif isinstance(value, str):
        moment = _dt.datetime.fromisoformat(value)
    elif isinstance(value, int | float):
        moment = _dt.datetime.fromtimestamp(value, _dt.UTC)
    else:
        raise TypeError(f"created_at must be a datetime or ISO string, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment


_SLOT_SETTERS: dict[type, tuple[Any, ...]] = {}
_MAKERS: dict[type, Any] = {}


def slot_setters(cls: type[Any]) -> tuple[Any, ...]:
    """The slot descriptors' setters of a slotted attrs class, in field order: how attrs' own
    ``__init__`` sets a frozen field.
    """
    setters = _SLOT_SETTERS.get(cls)
    if setters is None:
        setters = _SLOT_SETTERS[cls] = tuple(
            getattr(cls, f.name).__set__ for f in attrs.fields(cls)
        )
    return setters


def trusted_maker(cls: type[Any]) -> Any:
    """A function building ``cls`` from its field values, positional in field order, without
    converters, validators or attrs' keyword handling.

    Only for records built on a hot path from values this library produced itself, already of
    their types: it costs about half of the constructor.
    """
    make = _MAKERS.get(cls)
    if make is not None:
        return make
    # One straight-line function per class (the way attrs writes its own __init__): a loop
    # over zip(setters, values) costs about half as much again per record.
    setters = slot_setters(cls)
    names = [f"v{i}" for i in range(len(setters))]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    namespace.update({f"set{i}": setter for i, setter in enumerate(setters)})
    lines = [f"def make({', '.join(names)}):", "    inst = new(cls)"]
    lines += [f"    set{i}(inst, {name})" for i, name in enumerate(names)]
    lines.append("    return inst")
    exec("\n".join(lines), namespace)  # generated from the class's own fields only
    make = _MAKERS[cls] = namespace["make"]
    return make
