"""Verdicts: what a verifier decided about a trace."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, Self, cast

import attrs

from tracedistill.records.base import (
    SCHEMA_VERSION,
    VerdictReason,
    _build,
    _frozen_mapping,
    _non_negative,
    _parse_time,
    utcnow,
)


@attrs.frozen(slots=True, kw_only=True)
class Verdict:
    """A verifier's judgement of one trace, stored beside (never inside) the trace.

    ``details`` holds what explains the verdict: the extracted answer, the failing test, the
    error output (truncated).
    """

    trace_key: str = attrs.field(validator=attrs.validators.min_len(1))
    problem_id: str = attrs.field(validator=attrs.validators.min_len(1))
    verifier: str = attrs.field(validator=attrs.validators.min_len(1))
    verifier_version: str = attrs.field(validator=attrs.validators.min_len(1))
    passed: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    reason: VerdictReason = attrs.field(converter=VerdictReason)
    details: dict[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    elapsed_s: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    created_at: _dt.datetime = attrs.field(factory=utcnow, converter=_parse_time)

    def __attrs_post_init__(self) -> None:
        if self.passed != (self.reason is VerdictReason.PASSED):
            raise ValueError(
                f"verdict passed={self.passed} contradicts reason {str(self.reason)!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "schema": SCHEMA_VERSION,
            "trace_key": self.trace_key,
            "problem_id": self.problem_id,
            "verifier": self.verifier,
            "verifier_version": self.verifier_version,
            "passed": self.passed,
            "reason": str(self.reason),
            "details": self.details,
            "elapsed_s": self.elapsed_s,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cast(Self, _build(cls, data))
