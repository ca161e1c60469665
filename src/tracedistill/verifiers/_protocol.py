"""The messages between the code verifier, its sandbox runners and the sandboxed child.

One module names every field both sides use, so that neither side defines the protocol
implicitly:

- a :class:`Job` goes from the verifier to a runner (pickled over the pool's pipe);
- the child answers with :class:`Record` lines, JSON, one per line, on its result pipe (fd 3);
  the runner passes them on unread and the verifier parses them. Nothing in a record is
  trusted about *passing*: the child only reports what the program returned or printed.

Every line the child writes ends one *step* of its run, in an order fixed by the job (see
:func:`step_budgets`), which is how the runner holds each test to its own time limit from
outside the child, by counting lines, without parsing them.

Only stdlib imports: the child imports this before any untrusted byte runs.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "EVENTS",
    "STATUSES",
    "Group",
    "Job",
    "Limits",
    "OutputMode",
    "Record",
    "Status",
    "step_budgets",
]

#: How the child encodes a function test's output: ``plain`` (:func:`_codec.encode_output`),
#: ``set`` (iterators collected: evalplus compares these tasks as sets), ``not-none`` (a
#: candidate of evalplus's "output is not None" tasks: bools as themselves, anything else as
#: whether it is None), ``reference-not-none`` (the reference of such a task: ``out is not None``).
OutputMode = Literal["plain", "set", "not-none", "reference-not-none"]

#: How one test ended: ``ok``, or why not (``assert``: an assert test's condition was false;
#: ``missing``: no such function; ``signal``: a stdio program was killed by a signal).
Status = Literal["ok", "timeout", "memory", "violation", "output", "assert", "missing", "error"]
STATUSES = ("ok", "timeout", "memory", "violation", "output", "assert", "missing", "error")

#: Events of a run, in order: ``ns`` (namespaces entered), ``layers`` (isolation applied),
#: ``start`` (the harness runs), ``loaded`` (the program and setup were defined; once per
#: function-test group), ``done`` (every test ran); or instead ``syntax-error`` / ``load-error``.
EVENTS = ("ns", "layers", "start", "loaded", "done", "syntax-error", "load-error")


class Limits(TypedDict):
    """:class:`~tracedistill.verifiers.sandbox.SandboxLimits` as plain data."""

    memory_mb: int
    max_processes: int
    max_open_files: int
    max_output_bytes: int
    max_result_bytes: int
    load_timeout_s: float
    startup_s: float


class Group(TypedDict):
    """Function tests run on one fresh definition of the program (evalplus: base or plus).

    ``id`` is the group's index in the problem (0 base, 1 plus) and ``start`` the index of its
    first test there: a heavy sample's group may be cut into slices run by several runners.
    """

    id: int
    start: int
    inputs: list[Any]
    limits: list[float]


class Job(TypedDict, total=False):
    """One sandboxed run. ``mode`` says which of the optional fields apply.

    function: ``entry_point``, ``groups``, ``output_mode``; asserts: ``setup``, ``tests``
    (``{"kind": "value", "expr": ...}`` or ``{"kind": "assert", "src": ...}``) and
    ``test_timeout``; checks (split asserts, evaluated without the program): ``setup``,
    ``checks`` (``{"expr": ..., "values": [encoded]}``) and ``test_timeout``; stdio: ``stdin``
    and ``test_timeout``; probe: nothing else. The runner adds ``read_paths`` and
    ``shared_namespaces``.
    """

    mode: Literal["function", "asserts", "checks", "stdio", "probe"]
    code: str
    wall_s: float
    limits: Limits
    namespaces: bool
    landlock: bool
    sample_namespaces: bool | Literal["auto"]
    bwrap: bool
    tmp_root: str | None
    entry_point: str
    groups: list[Group]
    output_mode: OutputMode
    setup: str
    tests: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    test_timeout: float
    stdin: list[str]
    read_paths: list[str]
    shared_namespaces: list[str]


class Record(TypedDict, total=False):
    """One line from the child: an event, or the end of one test.

    A test record has ``test`` (its index; function tests also ``group``), ``status``, ``time``
    (seconds) and, when ``ok``, ``out`` (the encoded output; asserts' value tests), ``held``
    (checks) or ``stdout`` (stdio); otherwise ``error`` and, for a stdio program killed by a
    signal, ``signal``. An event record has ``event`` and, by event, ``namespaces``, ``layers``,
    ``error`` and ``kind`` (a :data:`Status`, for ``load-error``).
    """

    event: str
    namespaces: list[str]
    layers: list[str]
    kind: str
    group: int
    test: int
    status: str
    out: Any
    held: bool
    stdout: str
    time: float
    error: str
    signal: int


def step_budgets(job: Job) -> list[float]:
    """Seconds each step of a run may take, one per line the child writes, in order.

    The runner allows each step its budget from the moment the line ending the step before it
    arrives; the lines are ``ns``, ``layers`` and ``start`` (start-up), then per mode: function
    tests, per group ``loaded`` (the program defined) and one line per test; asserts and
    checks, ``loaded`` (program and setup defined) and one line per test; stdio, one line per
    case. After the last line the child only exits. A child that fails stops writing, and so
    ends its run.
    """
    limits = job["limits"]
    startup, load = float(limits["startup_s"]), float(limits["load_timeout_s"])
    steps = [startup, startup, startup]
    mode = job["mode"]
    if mode == "function":
        for group in job["groups"]:
            steps.append(load)
            steps.extend(float(limit) for limit in group["limits"])
    elif mode in ("asserts", "checks"):
        steps.append(2 * load)  # the program, then the tests' setup
        count = len(job["tests"] if mode == "asserts" else job["checks"])
        steps.extend([float(job["test_timeout"])] * count)
    elif mode == "stdio":
        steps.extend([float(job["test_timeout"])] * len(job["stdin"]))
    steps.append(startup)  # after "done": exit
    return steps
