"""From a sandboxed run's raw report to a verdict: records, failures, output comparison.

Everything here runs in the verifier's process on plain data: the records the child wrote
(:mod:`._protocol`), the runner's report of how the run ended, and the expected outputs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import anyio
import attrs
import orjson

from tracedistill.records import StdioCase, VerdictReason
from tracedistill.verifiers import _codec
from tracedistill.verifiers._protocol import Record
from tracedistill.verifiers.base import CheckResult, clip

__all__ = [
    "KIND_REASON",
    "ExpectedGroup",
    "SandboxRun",
    "compare_outputs",
    "failure_of",
    "judge_outputs",
    "judge_stdio",
    "layers",
    "parse_records",
    "plain_equal",
    "read_records",
    "short_repr",
    "stdout_matches",
]

_SIGSYS = 31
#: 19 digits in a row: possibly an integer beyond 64 bits, which orjson would read as a float.
_LONG_DIGITS = re.compile(rb"\d{19}")

#: The verdict of a test that ended with this status (see ``_protocol.Status``).
KIND_REASON = {
    "timeout": VerdictReason.TIMEOUT,
    "memory": VerdictReason.MEMORY_LIMIT,
    "violation": VerdictReason.SANDBOX_VIOLATION,
    "output": VerdictReason.OUTPUT_LIMIT,
    "assert": VerdictReason.TEST_FAILED,
    "missing": VerdictReason.RUNTIME_ERROR,
    "error": VerdictReason.RUNTIME_ERROR,
}


@attrs.frozen(slots=True)
class SandboxRun:
    """One sandboxed run as the verifier sees it: the child's records, what stopped it (None
    when every test ran), the seconds the run took on its runner and the size of its records.
    """

    records: list[Record]
    failure: CheckResult | None
    wall_s: float
    size: int = 0  # bytes of records read back (what comparing them costs)


#: (group index, group name, inputs, expected outputs)
ExpectedGroup = tuple[int, str, Sequence[Any], Sequence[Any]]


def parse_records(data: bytes) -> list[Record]:
    """The child's records, in order (a torn last line, from a killed child, is dropped)."""
    records: list[Record] = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            record = _parse_line(line)
        except ValueError:
            break
        if isinstance(record, dict):
            records.append(record)  # type: ignore[arg-type]
    return records


def _parse_line(line: bytes) -> Any:
    """One JSON line exactly as :func:`json.loads` reads it, at orjson's speed where they agree.

    orjson refuses some of what ``json.loads`` reads (lone surrogates escaped in a string,
    ``NaN``, a byte-order mark) and reads integers beyond 64 bits as floats: a line with a run
    of 19 digits, or one orjson refuses, goes to :func:`json.loads`, so the records are the same
    either way. Raises ValueError when the line is not JSON.
    """
    if _LONG_DIGITS.search(line) is None:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    return json.loads(line)


#: Records up to this size are parsed on the event loop (well under a millisecond).
_INLINE_PARSE_BYTES = 32 * 1024
#: Outputs up to this size (their records' bytes) are compared on the event loop.
_INLINE_COMPARE_BYTES = 16 * 1024


async def read_records(data: bytes) -> list[Record]:
    """:func:`parse_records`, in a worker thread when ``data`` is large.

    A light sample's few records parse in microseconds, less than a thread hop costs.
    """
    if len(data) < _INLINE_PARSE_BYTES:
        return parse_records(data)
    return await anyio.to_thread.run_sync(parse_records, data)


def layers(records: Sequence[Record]) -> str:
    """The isolation a run had, as reported by the runner and the sample (e.g. net+...)."""
    applied: list[str] = next((r["layers"] for r in records if r.get("event") == "layers"), [])
    namespaces: list[str] = next((r["namespaces"] for r in records if r.get("event") == "ns"), [])
    return "+".join([*namespaces, *applied]) or "none"


def failure_of(report: dict[str, Any], records: Sequence[Record]) -> CheckResult | None:
    """Turn what went wrong in a run into a failing result (None when every test ran)."""
    exit_code = report["exit"]
    tail = clip(report.get("output_tail", ""), 800)
    base: dict[str, Any] = {"sandbox": layers(records)}
    if tail:
        base["output_tail"] = tail
    if exit_code == 128 + _SIGSYS:
        return CheckResult.fail(
            VerdictReason.SANDBOX_VIOLATION,
            dict(
                base,
                error="a forbidden system call (network, process creation, signals to "
                "other processes, ptrace ...) killed the program",
            ),
        )
    status = report["status"]
    if status == "step-timeout":
        error = "over its time limit (the runner stopped the program)"
        return CheckResult.fail(VerdictReason.TIMEOUT, dict(base, error=error))
    if status == "timeout":
        return CheckResult.fail(VerdictReason.TIMEOUT, dict(base, error="wall-time limit"))
    if status == "result-limit":
        return CheckResult.fail(VerdictReason.OUTPUT_LIMIT, dict(base, error="results too large"))
    found = _record_failure(records, base)
    if found is not None:
        return found
    if exit_code in (128 + 9, 128 + 24):  # SIGKILL (hard CPU limit), SIGXCPU
        return CheckResult.fail(VerdictReason.TIMEOUT, dict(base, error="CPU-time limit"))
    if not any(r.get("event") == "done" for r in records):
        return CheckResult.fail(
            VerdictReason.RUNTIME_ERROR,
            dict(
                base, error=f"the program ended before the tests finished (exit code {exit_code})"
            ),
        )
    return None


def _record_failure(records: Sequence[Record], base: dict[str, Any]) -> CheckResult | None:
    """The first record that says a load or a test failed, as a failing result."""
    for record in records:
        event = record.get("event")
        if event == "syntax-error":
            return CheckResult.fail(
                VerdictReason.SYNTAX_ERROR, dict(base, error=record.get("error", ""))
            )
        if event == "load-error":
            return CheckResult.fail(
                KIND_REASON.get(record.get("kind", "error"), VerdictReason.RUNTIME_ERROR),
                dict(base, error=record.get("error", "")),
            )
        status = record.get("status")
        if status is not None and status != "ok":
            details = dict(base, error=record.get("error", ""), test=record.get("test"))
            if "group" in record:
                details["group"] = "base" if record["group"] == 0 else "plus"
            if status == "signal" and record.get("signal") == _SIGSYS:
                return CheckResult.fail(VerdictReason.SANDBOX_VIOLATION, details)
            return CheckResult.fail(KIND_REASON.get(status, VerdictReason.RUNTIME_ERROR), details)
    return None


async def judge_outputs(
    compare: Any,
    expected_groups: Sequence[ExpectedGroup],
    runs: Sequence[SandboxRun],
    failures: Sequence[CheckResult | None],
    owner: dict[tuple[int, int], int],
) -> CheckResult | None:
    """:func:`compare_outputs` on the records of ``runs``, in a worker thread when they are
    large (decoding thousands of outputs, numpy for floats); a light sample's few outputs
    compare in less time than a thread hop costs.
    """
    records = [record for run in runs for record in run.records]
    if sum(run.size for run in runs) < _INLINE_COMPARE_BYTES:
        return compare_outputs(compare, expected_groups, records, failures, owner)
    return await anyio.to_thread.run_sync(
        compare_outputs, compare, expected_groups, records, failures, owner
    )


def compare_outputs(
    compare: Any,
    expected_groups: Sequence[ExpectedGroup],
    records: Sequence[Record],
    failures: Sequence[CheckResult | None],
    owner: dict[tuple[int, int], int],
) -> CheckResult | None:
    """Compare a run's outputs with the expected ones, in test order; None when all match.

    ``compare`` is called per test (and its ``reset()`` per group); ``failures`` are the parts'
    failures and ``owner`` maps (group, test) to its part, so that a missing output reports why
    the part that should have produced it stopped.
    """
    outputs: dict[tuple[int, int], Record] = {}
    for record in records:
        if "group" in record and record.get("status") == "ok":
            outputs[(record["group"], record["test"])] = record
    for group_index, name, inputs, expected in expected_groups:
        compare.reset()
        for index, inp in enumerate(inputs):
            found = outputs.get((group_index, index))
            if found is None:
                # the child stopped here; the outputs before it were compared already
                part_index = owner[(group_index, index)]
                stopped = failures[part_index] or next(
                    (f for f in failures[:part_index] if f is not None), None
                )
                if stopped is not None:
                    return stopped
                return CheckResult.fail(
                    VerdictReason.RUNTIME_ERROR,
                    {"error": f"no result for {name} test {index}", "group": name},
                )
            try:
                got = _codec.decode(found.get("out"))
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                return CheckResult.fail(
                    VerdictReason.VERIFIER_ERROR, {"error": f"bad result record: {exc}"}
                )
            if not compare(got, expected[index], inp):
                return CheckResult.fail(
                    VerdictReason.TEST_FAILED,
                    {
                        "group": name,
                        "test": index,
                        "input": clip(short_repr(inp), 500),
                        "expected": clip(short_repr(expected[index]), 500),
                        "got": clip(short_repr(got), 500),
                    },
                )
    return next((f for f in failures if f is not None), None)


def judge_stdio(cases: Sequence[StdioCase], run: SandboxRun) -> CheckResult:
    """The verdict on stdin/stdout cases, in order: the first that failed decides."""
    records, failure = run.records, run.failure
    if failure is not None and failure.reason is VerdictReason.SANDBOX_VIOLATION:
        return failure
    results = {r["test"]: r for r in records if "test" in r}
    for index, case in enumerate(cases):
        record = results.get(index)
        if record is None or record.get("status") != "ok":
            return failure or CheckResult.fail(
                VerdictReason.RUNTIME_ERROR, {"error": f"no result for stdio case {index}"}
            )
        if not stdout_matches(record.get("stdout", ""), case.stdout):
            return CheckResult.fail(
                VerdictReason.TEST_FAILED,
                {
                    "test": index,
                    "stdin": clip(case.stdin, 300),
                    "expected": clip(case.stdout, 300),
                    "got": clip(record.get("stdout", ""), 300),
                },
            )
    if failure is not None:
        return failure
    return CheckResult.ok({"stdio": len(cases), "sandbox": layers(records)})


def plain_equal(got: Any, expected: Any) -> bool:
    """``bool(got == expected)`` for decoded values; False when that raises (numpy arrays)."""
    if isinstance(got, _codec.Opaque | _codec.NotNone):
        return False
    try:
        return bool(got == expected)
    except Exception:
        return False


def stdout_matches(got: str, expected: str, *, float_tol: float = 1e-6) -> bool:
    """Compare program output with the expected output, forgiving whitespace differences.

    Lines are compared with trailing whitespace and trailing blank lines ignored; failing
    that, the whitespace-separated tokens are compared, numbers within ``float_tol``.
    """

    def lines(text: str) -> list[str]:
        rows = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while rows and not rows[-1]:
            rows.pop()
        while rows and not rows[0]:
            rows.pop(0)
        return rows

    if lines(got) == lines(expected):
        return True
    got_tokens, expected_tokens = got.split(), expected.split()
    if len(got_tokens) != len(expected_tokens):
        return False
    for a, b in zip(got_tokens, expected_tokens, strict=True):
        if a == b:
            continue
        try:
            x, y = float(a), float(b)
        except ValueError:
            return False
        if not (math.isfinite(x) and math.isfinite(y)) or abs(x - y) > float_tol * max(1.0, abs(y)):
            return False
    return True


def short_repr(value: Any) -> str:
    """``repr(value)``, or a placeholder when repr fails."""
    try:
        return repr(value)
    except Exception:
        return "<unrepresentable>"
