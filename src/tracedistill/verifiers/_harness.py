"""The test harness that runs inside the sandboxed child, and the value codec both sides share.

Untrusted code runs in the same process as :func:`run_function_tests` and
:func:`run_assert_tests`, so nothing this harness says about *passing* is trusted: it only
reports what the code returned (encoded as plain data by :func:`encode`) and the parent
compares that with the expected values, which never enter the child. An object with a rigged
``__eq__`` is encoded as opaque and so never equals anything. Only stdlib imports here.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import signal
import sys
import time
from typing import Any

MAX_DEPTH = 200
#: Outputs whose pickle is larger than this travel as a digest, not as a value.
LARGE_OUTPUT_BYTES = 256 * 1024


class TestTimeout(BaseException):
    """Raised in the child when one test overruns its time limit."""


class Opaque:
    """A value the child could not encode (a custom object): it equals nothing."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<unencodable {self.type_name}>"


class Digest:
    """A large output, known by the sha256 of its memo-free pickle (never unpickled)."""

    __slots__ = ("hexdigest", "size")

    def __init__(self, hexdigest: str, size: int) -> None:
        self.hexdigest = hexdigest
        self.size = size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Digest) and other.hexdigest == self.hexdigest

    def __hash__(self) -> int:
        return hash(self.hexdigest)

    def __repr__(self) -> str:
        return f"<{self.size} bytes, sha256 {self.hexdigest[:12]}>"


class NotNone:
    """Encoded ``out is not None`` for evalplus's 'output is not None' oracle."""

    __slots__ = ("flag",)

    def __init__(self, flag: bool) -> None:
        self.flag = flag

    def __repr__(self) -> str:
        return f"<not-None: {self.flag}>"


# --- encoding (child side) -------------------------------------------------------------------

_int, _float, _str, _bool, _bytes = int, float, str, bool, bytes
_list, _tuple, _dict, _set, _frozenset, _complex = list, tuple, dict, set, frozenset, complex
_type, _isinstance, _len = type, isinstance, len


def encode(value: Any, depth: int = 0) -> Any:
    """Encode a value as JSON-compatible tagged data that keeps Python's types apart."""
    if depth > MAX_DEPTH:
        return ["o", "too deep"]
    kind = _type(value)
    if value is None or kind is _bool or kind is _str:
        return value
    if kind is _int:
        # hex: decimal str() of huge ints is capped by sys.set_int_max_str_digits
        return value if -(2**53) < value < 2**53 else ["i", _int.__format__(value, "x")]
    if kind is _float:
        return value if math.isfinite(value) else ["x", _float.__repr__(value)]
    if kind is _list:
        return ["l", [encode(v, depth + 1) for v in _list.__iter__(value)]]
    if kind is _tuple:
        return ["t", [encode(v, depth + 1) for v in _tuple.__iter__(value)]]
    if kind is _dict:
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in _dict.items(value)]]
    if kind is _set or kind is _frozenset:
        return ["s" if kind is _set else "f", [encode(v, depth + 1) for v in value]]
    if kind is _complex:
        return ["c", [encode(value.real), encode(value.imag)]]
    if kind is _bytes:
        return ["b", value.decode("latin-1")]
    # Subclasses of the built-in types (namedtuple, OrderedDict, IntEnum ...) and numpy
    # scalars become their plain values, as their == would treat them.
    for base in (_bool, _int, _float, _str, _tuple, _list, _dict, _frozenset, _set, _complex):
        if _isinstance(value, base):
            try:
                return encode(base(value), depth)
            except Exception:
                return ["o", kind.__name__]
    item = getattr(kind, "item", None)
    if item is not None and kind.__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        try:
            return encode(value.item(), depth)
        except Exception:
            pass
    return ["o", f"{kind.__module__}.{kind.__qualname__}"]


# --- decoding (parent side) ------------------------------------------------------------------


def decode(data: Any) -> Any:
    """Rebuild a value from :func:`encode`'s output (plain data only: safe on any input)."""
    if not isinstance(data, list):
        if isinstance(data, dict):
            raise ValueError("unexpected object in encoded value")
        return data
    if len(data) != 2 or not isinstance(data[0], str):
        raise ValueError("malformed encoded value")
    tag, body = data
    if tag == "i":
        return int(body, 16)
    if tag == "x":
        return float(body)
    if tag == "l":
        return [decode(v) for v in body]
    if tag == "t":
        return tuple(decode(v) for v in body)
    if tag == "d":
        return {decode(k): decode(v) for k, v in body}
    if tag == "s":
        return {decode(v) for v in body}
    if tag == "f":
        return frozenset(decode(v) for v in body)
    if tag == "c":
        return complex(decode(body[0]), decode(body[1]))
    if tag == "b":
        return str(body).encode("latin-1")
    if tag == "n":
        return NotNone(bool(body))
    if tag == "h":
        return Digest(str(body[0]), int(body[1]))
    if tag == "o":
        return Opaque(str(body))
    raise ValueError(f"unknown tag {tag!r} in encoded value")


# --- the child's side of the protocol ----------------------------------------------------------


class _Channel:
    """Writes JSON records to the result pipe (fd 3), one per line."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._write = os.write
        self._dumps = json.dumps

    def send(self, record: dict[str, Any]) -> None:
        data = (self._dumps(record, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            written = self._write(self._fd, view)
            view = view[written:]


def encode_output(value: Any) -> Any:
    """Encode a test's output: the value itself, or a digest when it is large.

    The digest hashes a memo-free pickle, computed at C speed; equal plain values give equal
    bytes, and since the expected output never enters the child, a digest cannot be forged.
    """
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=4)
    pickler.fast = True  # no memo: the bytes depend on the value, not on object sharing
    try:
        pickler.dump(value)
    except Exception:
        return encode(value)
    if buffer.tell() <= LARGE_OUTPUT_BYTES:
        return encode(value)
    return ["h", [hashlib.sha256(buffer.getbuffer()).hexdigest(), buffer.tell()]]


def _error_text(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = type(exc).__name__
    return text[:1000]


def _alarm(_signum: int, _frame: Any) -> None:
    raise TestTimeout


def _load(code: str, channel: _Channel, name: str) -> dict[str, Any] | None:
    namespace: dict[str, Any] = {"__name__": name, "__builtins__": __builtins__}
    try:
        compiled = compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError) as exc:
        channel.send({"ev": "syntax-error", "e": _error_text(exc)})
        return None
    try:
        signal.setitimer(signal.ITIMER_REAL, 10.0)
        exec(compiled, namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except TestTimeout:
        channel.send({"ev": "load-error", "e": "timeout while loading the code", "k": "timeout"})
        return None
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        channel.send({"ev": "load-error", "e": _error_text(exc), "k": _kind(exc)})
        return None
    return namespace


def _kind(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, PermissionError):
        return "violation"
    if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG: output file size limit
        return "output"
    if isinstance(exc, TestTimeout):
        return "timeout"
    return "error"


def run_function_tests(job: dict[str, Any], channel: _Channel) -> None:
    """Call the entry point on each input group; report encoded outputs and timings."""
    not_none = job.get("output_mode", "plain")
    for position, group in enumerate(job["groups"]):
        # A group may be a slice of a larger one (a heavy sample split across runners): it
        # then reports the original group and test indices.
        group_index = group.get("id", position)
        first = group.get("start", 0)
        namespace = _load(job["code"], channel, "__solution__")
        if namespace is None:
            return
        fn = namespace.get(job["entry_point"])
        if not callable(fn):
            channel.send(
                {"ev": "load-error", "e": f"no function {job['entry_point']!r}", "k": "missing"}
            )
            return
        for test_index, (args, limit) in enumerate(
            zip(group["inputs"], group["limits"], strict=True), start=first
        ):
            start = time.perf_counter()
            try:
                signal.setitimer(signal.ITIMER_REAL, limit)
                out = fn(*args)
                signal.setitimer(signal.ITIMER_REAL, 0)
            except BaseException as exc:
                signal.setitimer(signal.ITIMER_REAL, 0)
                channel.send(
                    {
                        "g": group_index,
                        "i": test_index,
                        "s": _kind(exc),
                        "e": _error_text(exc),
                        "t": time.perf_counter() - start,
                    }
                )
                return
            elapsed = time.perf_counter() - start
            if not_none == "reference":
                encoded: Any = out is not None
            elif not_none == "candidate" and type(out) is not bool:
                encoded = ["n", out is not None]
            else:
                encoded = encode_output(out)
            channel.send(
                {"g": group_index, "i": test_index, "s": "ok", "out": encoded, "t": elapsed}
            )
    channel.send({"ev": "done"})


def _run_setup(job: dict[str, Any], namespace: dict[str, Any], channel: _Channel) -> bool:
    """Run the tests' setup code (imports, helpers) in ``namespace``; report a failure."""
    if not job.get("setup"):
        return True
    try:
        exec(compile(job["setup"], "<setup>", "exec"), namespace)
    except BaseException as exc:
        channel.send({"ev": "load-error", "e": "setup: " + _error_text(exc), "k": _kind(exc)})
        return False
    return True


def run_assert_tests(job: dict[str, Any], channel: _Channel) -> None:
    """Run assert tests; a test given as an expression reports its value for the parent."""
    namespace = _load(job["code"], channel, "__solution__")
    if namespace is None:
        return
    if not _run_setup(job, namespace, channel):
        return
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
            channel.send({"i": index, "s": "assert", "e": _error_text(exc)})
            return
        except BaseException as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            channel.send(
                {
                    "i": index,
                    "s": _kind(exc),
                    "e": _error_text(exc),
                    "t": time.perf_counter() - start,
                }
            )
            return
        record: dict[str, Any] = {"i": index, "s": "ok", "t": time.perf_counter() - start}
        if test["kind"] == "value":
            record["out"] = encode(out)
        channel.send(record)
    channel.send({"ev": "done"})


def run_checks(job: dict[str, Any], channel: _Channel) -> None:
    """Evaluate split asserts on the probes' values, in a child that never loads the program.

    Each check is the assert's expression with its probes replaced by ``__probe_<k>`` names;
    it reports whether the expression held (or the exception it raised).
    """
    namespace: dict[str, Any] = {"__name__": "__checks__", "__builtins__": __builtins__}
    if not _run_setup(job, namespace, channel):
        return
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
            channel.send({"i": index, "s": _kind(exc), "e": _error_text(exc)})
            continue
        channel.send({"i": index, "s": "ok", "v": held})
    channel.send({"ev": "done"})


def run_in_child(job: dict[str, Any], fd: int) -> None:
    """Entry of the sandboxed child for function and assert tests (never returns)."""
    channel = _Channel(fd)
    signal.signal(signal.SIGALRM, _alarm)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000))
    try:
        channel.send({"ev": "start"})
        if job["mode"] == "function":
            run_function_tests(job, channel)
        elif job["mode"] == "checks":
            run_checks(job, channel)
        else:
            run_assert_tests(job, channel)
    except BaseException:
        os._exit(70)
    os._exit(0)
