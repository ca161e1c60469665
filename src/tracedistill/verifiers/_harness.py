"""The test harness that runs inside the sandboxed child.

Untrusted code runs in the same process as :func:`run_function_tests` and
:func:`run_assert_tests`, so nothing this harness says about *passing* is trusted: it only
reports what the code returned (encoded as plain data by :mod:`._codec`) and the parent
compares that with the expected values, which never enter the child. An object with a rigged
``__eq__`` is encoded as opaque and so never equals anything. The records it writes are those
of :mod:`._protocol`. Only stdlib imports here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from tracedistill.verifiers._codec import decode, encode, encode_output, materialize
from tracedistill.verifiers._protocol import Job, OutputMode, Record, Status


class TestTimeout(BaseException):
    """Raised in the child when one test overruns its time limit."""


# --- the child's side of the protocol ----------------------------------------------------------


class _Channel:
    """Writes JSON records to the result pipe (fd 3), one per line."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._write = os.write
        self._dumps = json.dumps

    def send(self, record: Record) -> None:
        data = (self._dumps(record, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            written = self._write(self._fd, view)
            view = view[written:]


def _error_text(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = type(exc).__name__
    return text[:1000]


def _alarm(_signum: int, _frame: Any) -> None:
    raise TestTimeout


def _load(code: str, channel: _Channel, name: str, timeout: float) -> dict[str, Any] | None:
    namespace: dict[str, Any] = {"__name__": name, "__builtins__": __builtins__}
    try:
        compiled = compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError) as exc:
        channel.send({"event": "syntax-error", "error": _error_text(exc)})
        return None
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        exec(compiled, namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except TestTimeout:
        channel.send(
            {"event": "load-error", "error": "timeout while loading the code", "kind": "timeout"}
        )
        return None
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        channel.send({"event": "load-error", "error": _error_text(exc), "kind": _kind(exc)})
        return None
    return namespace


def _kind(exc: BaseException) -> Status:
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, PermissionError):
        return "violation"
    if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG: output file size limit
        return "output"
    if isinstance(exc, TestTimeout):
        return "timeout"
    return "error"


def _encoder(mode: OutputMode) -> Callable[[Any], Any]:
    """How a function test's output travels (see :data:`_protocol.OutputMode`)."""
    if mode == "reference-not-none":
        return lambda out: out is not None
    if mode == "not-none":
        return lambda out: out if type(out) is bool else ["n", out is not None]
    if mode == "set":
        return materialize
    return encode_output


def run_function_tests(job: Job, channel: _Channel) -> None:
    """Call the entry point on each input group; report encoded outputs and timings."""
    encode_out = _encoder(job.get("output_mode", "plain"))
    load_timeout = float(job["limits"]["load_timeout_s"])
    for group in job["groups"]:
        # A group may be a slice of a larger one (a heavy sample split across runners): it
        # then reports the original group and test indices.
        group_index, first = group["id"], group["start"]
        namespace = _load(job["code"], channel, "__solution__", load_timeout)
        if namespace is None:
            return
        fn = namespace.get(job["entry_point"])
        if not callable(fn):
            channel.send(
                {
                    "event": "load-error",
                    "error": f"no function {job['entry_point']!r}",
                    "kind": "missing",
                }
            )
            return
        channel.send({"event": "loaded"})
        for test_index, (args, limit) in enumerate(
            zip(group["inputs"], group["limits"], strict=True), start=first
        ):
            start = time.perf_counter()
            try:
                signal.setitimer(signal.ITIMER_REAL, limit)
                out = fn(*args)
                # in the test's time: collecting a generator runs the program's code
                encoded = encode_out(out)
                signal.setitimer(signal.ITIMER_REAL, 0)
            except BaseException as exc:
                signal.setitimer(signal.ITIMER_REAL, 0)
                channel.send(
                    {
                        "group": group_index,
                        "test": test_index,
                        "status": _kind(exc),
                        "error": _error_text(exc),
                        "time": time.perf_counter() - start,
                    }
                )
                return
            channel.send(
                {
                    "group": group_index,
                    "test": test_index,
                    "status": "ok",
                    "out": encoded,
                    "time": time.perf_counter() - start,
                }
            )
    channel.send({"event": "done"})


def _run_setup(job: Job, namespace: dict[str, Any], channel: _Channel) -> bool:
    """Run the tests' setup code (imports, helpers) in ``namespace``; report a failure."""
    if not job.get("setup"):
        return True
    try:
        signal.setitimer(signal.ITIMER_REAL, float(job["limits"]["load_timeout_s"]))
        exec(compile(job["setup"], "<setup>", "exec"), namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        channel.send(
            {"event": "load-error", "error": "setup: " + _error_text(exc), "kind": _kind(exc)}
        )
        return False
    return True


def run_assert_tests(job: Job, channel: _Channel) -> None:
    """Run assert tests; a test given as an expression reports its value for the parent."""
    namespace = _load(job["code"], channel, "__solution__", float(job["limits"]["load_timeout_s"]))
    if namespace is None:
        return
    if not _run_setup(job, namespace, channel):
        return
    channel.send({"event": "loaded"})
    limit = float(job["test_timeout"])
    for index, test in enumerate(job["tests"]):
        start = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            if test["kind"] == "value":
                out = eval(compile(test["expr"], "<test>", "eval"), namespace)
            else:
                exec(compile(test["src"], "<test>", "exec"), namespace)
                out = None
            signal.setitimer(signal.ITIMER_REAL, 0)
        except AssertionError as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            channel.send({"test": index, "status": "assert", "error": _error_text(exc)})
            return
        except BaseException as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            channel.send(
                {
                    "test": index,
                    "status": _kind(exc),
                    "error": _error_text(exc),
                    "time": time.perf_counter() - start,
                }
            )
            return
        record: Record = {"test": index, "status": "ok", "time": time.perf_counter() - start}
        if test["kind"] == "value":
            record["out"] = encode(out)
        channel.send(record)
    channel.send({"event": "done"})


def run_checks(job: Job, channel: _Channel) -> None:
    """Evaluate split asserts on the probes' values, in a child that never loads the program.

    Each check is the assert's expression with its probes replaced by ``__probe_<k>`` names;
    it reports whether the expression held (or the exception it raised).
    """
    namespace: dict[str, Any] = {"__name__": "__checks__", "__builtins__": __builtins__}
    if not _run_setup(job, namespace, channel):
        return
    channel.send({"event": "loaded"})
    limit = float(job["test_timeout"])
    for index, check in enumerate(job["checks"]):
        scope = dict(namespace)
        scope.update({f"__probe_{k}": decode(v) for k, v in enumerate(check["values"])})
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            held = bool(eval(compile(check["expr"], "<check>", "eval"), scope))
            signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            channel.send({"test": index, "status": _kind(exc), "error": _error_text(exc)})
            continue
        channel.send({"test": index, "status": "ok", "held": held})
    channel.send({"event": "done"})


def run_in_child(job: Job, fd: int) -> None:
    """Entry of the sandboxed child for function and assert tests (never returns)."""
    channel = _Channel(fd)
    signal.signal(signal.SIGALRM, _alarm)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000))
    try:
        channel.send({"event": "start"})
        if job["mode"] == "function":
            run_function_tests(job, channel)
        elif job["mode"] == "checks":
            run_checks(job, channel)
        else:
            run_assert_tests(job, channel)
    except BaseException:
        os._exit(70)
    os._exit(0)
