"""CodeVerifier: run the program in a response against the problem's tests, in the sandbox.

Three test formats (:class:`~tracedistill.records.CodeTests`): evalplus-style function tests
(MBPP+: the entry point on base and plus inputs, outputs compared by evalplus's rules), assert
lists and stdin/stdout cases. The sandboxed child only reports what the code returned or
printed; the comparison with the expected values happens here, in the parent, so code that
fakes success (exits early, rigs ``__eq__``, patches builtins) cannot pass a test it did not
solve. Reference outputs are computed once, in the sandbox, and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import orjson

from tracedistill.errors import SandboxError, VerifierError
from tracedistill.records import CodeTests, FunctionTests, Problem, TaskKind, VerdictReason
from tracedistill.verifiers import _harness
from tracedistill.verifiers._asserts import bound_names, plan_assert
from tracedistill.verifiers._bubblewrap import (
    bubblewrap_command,
    bubblewrap_problem,
    find_bubblewrap,
)
from tracedistill.verifiers.base import CheckResult, Verifier, clip
from tracedistill.verifiers.extract import CodeExtraction, extract_code
from tracedistill.verifiers.pool import JobOutcome, WorkerPool
from tracedistill.verifiers.sandbox import SandboxLimits

__all__ = ["EVALPLUS_METADATA_KEY", "CodeVerifier"]

log = logging.getLogger(__name__)

#: ``problem.metadata[EVALPLUS_METADATA_KEY] = {"dataset": "mbpp", "task_id": "Mbpp/2"}`` marks
#: an evalplus problem: its JSON inputs go through evalplus's own deserialization (tuples, sets,
#: complex numbers) and its outputs are compared with evalplus's special oracles.
EVALPLUS_METADATA_KEY = "evalplus"

_HANDLER = "tracedistill.verifiers.sandbox:handle"
_LOGIC_VERSION = "2"  # 2: asserts split into probes and checks
_SIGSYS = 31
#: Memory for decoded reference outputs (MBPP+'s 378 take about 7 MB on disk).
_REFERENCE_CACHE_BYTES = 256 * 1024 * 1024
#: Problems whose deserialized inputs and reference keys stay cached.
_INPUTS_CACHED = 1024


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tracedistill" / "reference-outputs"


@attrs.frozen(slots=True)
class _Reference:
    base: list[Any]
    plus: list[Any]
    base_time: list[float]
    plus_time: list[float]


class CodeVerifier(Verifier):
    """Runs extracted Python code against a problem's tests in the sandbox.

    Args:
        extraction: how the program is found in a response (see :class:`CodeExtraction`).
        workers: samples run at once (default: the CPU count, at most 8).
        limits: resource limits of each sandboxed run (see :class:`SandboxLimits`).
        test_timeout_s: time limit of one assert or stdin/stdout test.
        min_time_limit_s, time_limit_factor: a function test may take
            ``max(min_time_limit_s, time_limit_factor * reference time)`` (evalplus: 1 s, 4x).
        max_wall_s: cap on the whole run of one sample.
        split_above_s: a sample whose function tests took the reference solution longer than
            this (seconds) has its tests split into consecutive parts run on several runners
            at once, each part in a fresh process like evalplus's base and plus runs; None
            never splits. One heavy sample then no longer holds up a whole batch.
        cache_dir: where reference outputs are cached (default ``~/.cache/tracedistill``).
        namespaces: enter new network/PID namespaces where the kernel allows it.
        landlock: confine the filesystem with Landlock where the kernel allows it (without it,
            the program may read what your user can read and may write nowhere).
        sample_namespaces: give every sample its own PID and mount namespaces: ``None``
            (default) when another layer does not already cover them (no Landlock, or
            ``max_processes > 0``), True always, False never.
        bubblewrap: run each sandbox runner inside a bubblewrap (``bwrap``) container, which
            hides the host's files entirely (see ``docs/sandbox.md``): None (default) when
            ``bwrap`` is installed and works here, True always (else :class:`SandboxError`),
            False never.
        require: isolation layers that must be available, else :class:`SandboxError`
            (``seccomp``, ``landlock``, ``net``, ``pid``, ``bubblewrap``); default
            ``("seccomp",)``.
        accept_truncated: let a response cut at ``max_tokens`` pass.
    """

    name = "code"

    def __init__(
        self,
        *,
        extraction: CodeExtraction | None = None,
        workers: int | None = None,
        limits: SandboxLimits | None = None,
        test_timeout_s: float = 6.0,
        min_time_limit_s: float = 1.0,
        time_limit_factor: float = 4.0,
        max_wall_s: float = 180.0,
        split_above_s: float | None = 2.0,
        cache_dir: str | os.PathLike[str] | None = None,
        namespaces: bool = True,
        landlock: bool = True,
        sample_namespaces: bool | None = None,
        bubblewrap: bool | None = None,
        require: Sequence[str] = ("seccomp",),
        accept_truncated: bool = False,
    ) -> None:
        self.extraction = extraction or CodeExtraction()
        self.workers = workers or min(os.cpu_count() or 1, 8)
        self.limits = limits or SandboxLimits()
        if self.limits.max_processes > 0 and os.getuid() == 0:
            raise SandboxError(
                "max_processes > 0 cannot be enforced as root (RLIMIT_NPROC does not apply to "
                "root); run as an ordinary user or keep max_processes=0"
            )
        self.test_timeout_s = test_timeout_s
        self.min_time_limit_s = min_time_limit_s
        self.time_limit_factor = time_limit_factor
        self.max_wall_s = max_wall_s
        self.split_above_s = split_above_s
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.namespaces = namespaces
        self.landlock = landlock
        self.sample_namespaces = sample_namespaces
        self.bubblewrap = bubblewrap
        self._bwrap: str | None = None  # the bwrap executable in use, once decided
        self._bwrap_decided = False
        self.require = tuple(require)
        self.accept_truncated = accept_truncated
        settings = orjson.dumps(
            [
                attrs.asdict(self.extraction),
                test_timeout_s,
                min_time_limit_s,
                time_limit_factor,
                accept_truncated,
                _evalplus_version(),
            ]
        )
        self.version = f"{_LOGIC_VERSION}+{hashlib.sha256(settings).hexdigest()[:10]}"
        self._pool = WorkerPool(
            _HANDLER,
            size=self.workers,
            timeout_s=max_wall_s + 30,
            name="sandbox",
            launcher=self._launch,
        )
        # Decoded reference outputs, most recently used last, with their sizes on disk: kept
        # up to _REFERENCE_CACHE_BYTES so that a whole benchmark's stay in memory.
        self._references: OrderedDict[str, tuple[_Reference, int]] = OrderedDict()
        self._reference_bytes = 0
        # Per problem object (held, so that its id is not reused): its reference's cache key.
        self._reference_keys: OrderedDict[int, tuple[Problem, str]] = OrderedDict()
        self._reference_locks: dict[str, anyio.Lock] = {}
        # Per FunctionTests object (held, so that its id is not reused): deserialized inputs.
        self._inputs: OrderedDict[int, tuple[FunctionTests, list[Any], list[Any]]] = OrderedDict()
        self._capabilities: dict[str, Any] | None = None
        self._reference_failures: dict[str, CheckResult] = {}
        self._tmp_root: str | None = None  # the samples' working directories live under it
        self._costs: dict[str, float] = {}  # problem id -> seconds its reference took

    @property
    def default_concurrency(self) -> int:
        """Twice the workers, so a runner never waits for its next sample."""
        return self.workers * 2

    @property
    def pool(self) -> WorkerPool:
        """The sandbox runners' pool (for diagnostics)."""
        return self._pool

    def _schedule(self, problems: Sequence[Problem]) -> list[int]:
        """Longest first, by the reference run's time when it is known (else input order)."""
        costs = [self._costs.get(problem.id, 0.0) for problem in problems]
        return sorted(range(len(problems)), key=lambda index: -costs[index])

    # --- lifetime ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sandbox runners and check that the required isolation is available."""
        await self._decide_bubblewrap()
        await self._pool.start()
        await self.capabilities()

    async def _decide_bubblewrap(self) -> None:
        """Find out once, before the first runner starts, whether runners go in bubblewrap."""
        if self._bwrap_decided:
            return
        if self.bubblewrap is not False:
            found = find_bubblewrap()
            problem = (
                await anyio.to_thread.run_sync(bubblewrap_problem, found)
                if found
                else "bwrap is not installed (Debian/Ubuntu: apt install bubblewrap)"
            )
            if problem is None:
                self._bwrap = found
                log.info("code sandbox runners start inside bubblewrap (%s)", found)
            elif self.bubblewrap:
                raise SandboxError(f"bubblewrap=True but bubblewrap cannot run here: {problem}")
            elif found:  # installed but unusable: worth a warning
                log.warning("code sandbox without bubblewrap, which cannot run here: %s", problem)
            else:
                log.info("code sandbox without bubblewrap: %s", problem)
        self._bwrap_decided = True

    def _sandbox_root(self) -> str:
        """The verifier's own temporary directory (samples' and runners' directories)."""
        if self._tmp_root is None:
            self._tmp_root = tempfile.mkdtemp(prefix="tracedistill-sandbox-")
        return self._tmp_root

    def _launch(self, command: list[str]) -> list[str]:
        """A runner's command line: inside bubblewrap, with a fresh ``/tmp`` of its own."""
        if self._bwrap is None:
            return command
        tmp_dir = tempfile.mkdtemp(prefix="runner-", dir=self._sandbox_root())
        return bubblewrap_command(self._bwrap, command, tmp_dir=tmp_dir)

    async def aclose(self) -> None:
        """Stop the sandbox runners (the verifier restarts them if used again)."""
        await self._pool.aclose()
        root, self._tmp_root = self._tmp_root, None
        if root is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(root, ignore_errors=True))

    async def capabilities(self) -> dict[str, Any]:
        """The isolation layers this machine allows (namespaces, Landlock ABI, seccomp).

        Raises:
            SandboxError: a layer named in ``require`` is not available.
        """
        if self._capabilities is None:
            await self._decide_bubblewrap()
            outcome = await self._pool.run({"mode": "probe"}, timeout_s=60)
            if not outcome.ok:
                raise SandboxError(f"the code sandbox could not start: {outcome.error}")
            caps: dict[str, Any] = dict(outcome.value)
            caps["bubblewrap"] = self._bwrap
            if self._bwrap is not None:  # namespaces bubblewrap made for the runner
                caps["namespaces"] = sorted(
                    {*caps["namespaces"], "user", "mnt", "pid", "net", "ipc", "uts", "cgroup"}
                )
            available = set(caps["namespaces"])
            if self._bwrap is not None:
                available.add("bubblewrap")
            if caps["seccomp"]:
                available.add("seccomp")
            if caps["landlock_abi"] > 0:
                available.add("landlock")
            missing = [layer for layer in self.require if layer not in available]
            if missing:
                raise SandboxError(
                    f"the code sandbox needs {missing} but this machine ({caps['platform']}) "
                    f"offers only {sorted(available)}; pass require=() to run with less "
                    "isolation at your own risk (see docs/sandbox.md)"
                )
            self._capabilities = caps
        return self._capabilities

    # --- checking ------------------------------------------------------------------------------

    async def check(self, problem: Problem, response: str) -> CheckResult:
        """Extract the program from ``response`` and run it against ``problem.tests``."""
        if problem.kind is not TaskKind.CODE or problem.tests is None:
            raise VerifierError(f"CodeVerifier got a {problem.kind} problem {problem.id!r}")
        tests = problem.tests
        entry = tests.function.entry_point if tests.function is not None else None
        code, how = extract_code(response, self.extraction, entry_point=entry)
        return await self.check_code(problem, code, extraction=how)

    async def check_code(
        self, problem: Problem, code: str, *, extraction: str = "given"
    ) -> CheckResult:
        """Run a program (already extracted) against ``problem.tests``."""
        assert problem.tests is not None
        start = time.monotonic()
        await self.capabilities()
        if not code.strip():
            return CheckResult.fail(VerdictReason.NO_ANSWER, {"extraction": extraction})
        tests: CodeTests = problem.tests
        result: CheckResult | None = None
        details: dict[str, Any] = {"extraction": extraction, "tests": tests.count}
        if tests.function is not None:
            result = await self._check_function(problem, tests.function, code)
        if (result is None or result.passed) and tests.asserts:
            result = await self._check_asserts(tests, code)
        if (result is None or result.passed) and tests.stdio:
            result = await self._check_stdio(tests, code)
        assert result is not None
        details.update(result.details)
        return attrs.evolve(result, details=details, elapsed_s=time.monotonic() - start)

    # --- function tests (evalplus) -------------------------------------------------------------

    async def _check_function(self, problem: Problem, fn: FunctionTests, code: str) -> CheckResult:
        if not _EVALPLUS:
            await anyio.to_thread.run_sync(_load_evalplus)
        meta = problem.metadata.get(EVALPLUS_METADATA_KEY) or {}
        dataset = str(meta.get("dataset", ""))
        base_inputs, plus_inputs = await self._function_inputs(problem, fn, meta)
        reference = await self._reference(problem, fn, base_inputs, plus_inputs, dataset)
        if isinstance(reference, CheckResult):
            return reference
        groups: list[dict[str, Any]] = []
        costs: list[list[float] | None] = []
        for group_index, (inputs, times) in enumerate(
            ((base_inputs, reference.base_time), (plus_inputs, reference.plus_time))
        ):
            if not inputs:
                continue
            limits = (
                [
                    max(self.min_time_limit_s, self.time_limit_factor * t)
                    if t is not None
                    else self.test_timeout_s
                    for t in times
                ]
                if times
                else [self.test_timeout_s] * len(inputs)
            )
            groups.append({"id": group_index, "start": 0, "inputs": inputs, "limits": limits})
            costs.append(list(times) if times and None not in times else None)
        not_none = dataset == "mbpp" and fn.entry_point in _evalplus_not_none()
        parts = self._split(groups, costs)
        jobs = [
            self._job(
                "function",
                code,
                sum(min(60.0, sum(g["limits"])) + 1.0 for g in part) + self.limits.load_timeout_s,
                entry_point=fn.entry_point,
                groups=part,
                output_mode="candidate" if not_none else "plain",
            )
            for part in parts
        ]
        reports = await self._run_parts(jobs)
        records: list[dict[str, Any]] = []
        failures: list[CheckResult | None] = []
        for report in reports:
            if isinstance(report, CheckResult):
                if report.reason is not VerdictReason.TIMEOUT or len(reports) == 1:
                    return report
                failures.append(report)
            elif report is None:  # cancelled: an earlier part had failed already
                failures.append(None)
            else:
                records.extend(report[0])
                failures.append(report[1])
        for part_failure in failures:
            if part_failure is not None and part_failure.reason is VerdictReason.SANDBOX_VIOLATION:
                return part_failure
        owner = {
            (group["id"], group["start"] + offset): part_index
            for part_index, part in enumerate(parts)
            for group in part
            for offset in range(len(group["inputs"]))
        }
        expected_groups = [
            (group_id, name, inputs, expected)
            for group_id, (name, inputs, expected) in enumerate(
                (("base", base_inputs, reference.base), ("plus", plus_inputs, reference.plus))
            )
            if inputs
        ]
        compare = _EvalplusComparator(fn.entry_point, fn.atol, dataset)
        # Decoding and comparing thousands of outputs (numpy for floats) is CPU work: a thread.
        verdict = await anyio.to_thread.run_sync(
            _compare_outputs, compare, expected_groups, records, failures, owner
        )
        if verdict is not None:
            return verdict
        return CheckResult.ok(
            {"base": "pass", "plus": "pass" if plus_inputs else None, "sandbox": _layers(records)}
        )

    def _split(
        self, groups: list[dict[str, Any]], costs: list[list[float] | None]
    ) -> list[list[dict[str, Any]]]:
        """Cut the test groups into consecutive parts of about equal reference time.

        Splits only when every test's reference time is known, their sum is over
        ``split_above_s`` and there is more than one runner; at most two parts per runner, and
        none much shorter than a second (each part pays for a process and loading the code).
        """
        known = [c for c in costs if c is not None]
        total = sum(sum(c) for c in known)
        if (
            self.split_above_s is None
            or self.workers < 2
            or len(known) != len(groups)
            or total <= self.split_above_s
        ):
            return [groups]
        count = min(2 * self.workers, max(2, math.ceil(total)))
        share = total / count
        parts: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        spent = 0.0  # reference time of the parts already closed and the current one

        def cut(group: dict[str, Any], begin: int, end: int) -> dict[str, Any]:
            return {
                "id": group["id"],
                "start": group["start"] + begin,
                "inputs": group["inputs"][begin:end],
                "limits": group["limits"][begin:end],
            }

        for group, times in zip(groups, known, strict=True):
            begin = 0
            for index, t in enumerate(times):
                spent += t
                if spent >= share * (len(parts) + 1) and len(parts) < count - 1:
                    current.append(cut(group, begin, index + 1))
                    parts.append(current)
                    current, begin = [], index + 1
            if begin < len(times):
                current.append(cut(group, begin, len(times)))
        if current:
            parts.append(current)
        return parts

    async def _run_parts(
        self, jobs: list[dict[str, Any]]
    ) -> list[CheckResult | tuple[list[dict[str, Any]], CheckResult | None] | None]:
        """Run the parts of one sample at once; a failed part cancels the parts after it.

        Tests after a failure cannot change the verdict (the first failing test decides it),
        so their runs are stopped; parts before it still finish. A cancelled part is None.
        """
        if len(jobs) == 1:
            return [await self._run(jobs[0])]
        reports: list[CheckResult | tuple[list[dict[str, Any]], CheckResult | None] | None]
        reports = [None] * len(jobs)
        scopes = [anyio.CancelScope() for _ in jobs]

        async def run_part(index: int) -> None:
            with scopes[index]:
                report = await self._run(jobs[index])
                reports[index] = report
                if isinstance(report, CheckResult) or report[1] is not None:
                    for later in scopes[index + 1 :]:
                        later.cancel()

        async with anyio.create_task_group() as group:
            for index in range(len(jobs)):
                group.start_soon(run_part, index)
        return reports

    async def _function_inputs(
        self, problem: Problem, fn: FunctionTests, meta: dict[str, Any]
    ) -> tuple[list[Any], list[Any]]:
        cached = self._inputs.get(id(fn))
        if cached is not None:
            self._inputs.move_to_end(id(fn))
            return cached[1], cached[2]
        base, plus = list(fn.base_inputs), list(fn.plus_inputs)
        if meta.get("dataset") == "mbpp" and meta.get("task_id"):
            task_id = str(meta["task_id"])

            def convert() -> tuple[list[Any], list[Any]]:
                mbpp_deserialize_inputs = _load_evalplus()["deserialize"]
                return (
                    list(mbpp_deserialize_inputs(task_id, base)),
                    list(mbpp_deserialize_inputs(task_id, plus)),
                )

            base, plus = await anyio.to_thread.run_sync(convert)
        self._inputs[id(fn)] = (fn, base, plus)
        if len(self._inputs) > _INPUTS_CACHED:
            self._inputs.popitem(last=False)
        return base, plus

    async def _reference(
        self,
        problem: Problem,
        fn: FunctionTests,
        base_inputs: list[Any],
        plus_inputs: list[Any],
        dataset: str,
    ) -> _Reference | CheckResult:
        if fn.expected_base is not None and (not plus_inputs or fn.expected_plus is not None):
            return _Reference(
                base=list(fn.expected_base),
                plus=list(fn.expected_plus or ()),
                base_time=[],
                plus_time=[],
            )
        assert fn.reference_solution is not None
        not_none = dataset == "mbpp" and fn.entry_point in _evalplus_not_none()
        key = self._reference_key(problem, fn, not_none, dataset)
        cached = self._references.get(key)
        if cached is not None:
            self._references.move_to_end(key)
            return cached[0]
        failed = self._reference_failures.get(key)
        if failed is not None:  # a broken reference is not run again for every sample
            return failed
        lock = self._reference_locks.setdefault(key, anyio.Lock())
        async with lock:
            cached = self._references.get(key)
            if cached is not None:
                return cached[0]
            if key in self._reference_failures:
                return self._reference_failures[key]
            path = self.cache_dir / f"{key}.json"
            raw, size = await anyio.to_thread.run_sync(_read_cache, path)
            if raw is None:
                computed = await self._compute_reference(fn, base_inputs, plus_inputs, not_none)
                if isinstance(computed, CheckResult):
                    log.warning("reference solution of %s failed: %s", problem.id, computed.details)
                    self._reference_failures[key] = computed
                    return computed
                raw = computed
                size = await anyio.to_thread.run_sync(_write_cache, path, raw)
            reference = await anyio.to_thread.run_sync(_decode_reference, raw)
            self._costs[problem.id] = sum(reference.base_time) + sum(reference.plus_time)
            self._references[key] = (reference, size)
            self._reference_bytes += size
            while self._reference_bytes > _REFERENCE_CACHE_BYTES and len(self._references) > 1:
                self._reference_bytes -= self._references.popitem(last=False)[1][1]
            return reference

    def _reference_key(
        self, problem: Problem, fn: FunctionTests, not_none: bool, dataset: str
    ) -> str:
        """The cache key of a problem's reference outputs (computed once per problem)."""
        known = self._reference_keys.get(id(problem))
        if known is not None:
            self._reference_keys.move_to_end(id(problem))
            return known[1]
        # The harness codec, not orjson: MBPP+ inputs hold integers beyond 64 bits.
        identity = _harness.encode(
            [
                _LOGIC_VERSION,
                fn.reference_solution,
                fn.entry_point,
                not_none,
                dataset,
                list(fn.base_inputs),
                list(fn.plus_inputs),
                str(problem.metadata.get(EVALPLUS_METADATA_KEY)),
            ]
        )
        key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
        self._reference_keys[id(problem)] = (problem, key)
        if len(self._reference_keys) > _INPUTS_CACHED:
            self._reference_keys.popitem(last=False)
        return key

    async def _compute_reference(
        self, fn: FunctionTests, base_inputs: list[Any], plus_inputs: list[Any], not_none: bool
    ) -> dict[str, Any] | CheckResult:
        groups = [
            {"inputs": base_inputs, "limits": [60.0] * len(base_inputs)},
            {"inputs": plus_inputs, "limits": [60.0] * len(plus_inputs)},
        ]
        job = self._job(
            "function",
            fn.reference_solution or "",
            self.max_wall_s,
            entry_point=fn.entry_point,
            groups=groups,
            output_mode="reference" if not_none else "plain",
        )
        report = await self._run(job)
        failure = report if isinstance(report, CheckResult) else report[1]
        if failure is not None:
            details = dict(failure.details, note="the reference solution failed in the sandbox")
            return CheckResult.fail(VerdictReason.VERIFIER_ERROR, details)
        assert not isinstance(report, CheckResult)
        raw: dict[str, Any] = {"base": [], "plus": [], "base_time": [], "plus_time": []}
        for record in report[0]:
            if "g" in record:
                name = "base" if record["g"] == 0 else "plus"
                raw[name].append(record["out"])
                raw[f"{name}_time"].append(record["t"])
        if len(raw["base"]) != len(base_inputs) or len(raw["plus"]) != len(plus_inputs):
            return CheckResult.fail(
                VerdictReason.VERIFIER_ERROR, {"error": "reference run returned too few outputs"}
            )
        return raw

    # --- asserts and stdio -----------------------------------------------------------------------

    async def _check_asserts(self, tests: CodeTests, code: str) -> CheckResult:
        """Run assert tests: probes next to the program, the asserts themselves away from it.

        See :mod:`tracedistill.verifiers._asserts` for how an assert is split.
        """
        trusted = bound_names(tests.setup)
        plans = [plan_assert(src, trusted) for src in tests.asserts]
        # Stage 1, next to the program: each probe is a value test of its own.
        stage1: list[dict[str, Any]] = []
        owners: list[int] = []  # stage-1 test -> its assert
        for index, (plan, _) in enumerate(plans):
            if plan["kind"] == "probes":
                stage1 += [{"kind": "value", "expr": expr} for expr in plan["probes"]]
                owners += [index] * len(plan["probes"])
            else:
                stage1.append(plan)
                owners.append(index)
        job = self._job(
            "asserts",
            code,
            len(stage1) * (self.test_timeout_s + 0.2) + self.limits.load_timeout_s,
            setup=tests.setup,
            tests=stage1,
            test_timeout=self.test_timeout_s,
        )
        report = await self._run(job)
        if isinstance(report, CheckResult):
            return report
        records, failure = report
        if failure is not None and failure.reason is VerdictReason.SANDBOX_VIOLATION:
            return failure
        results = {r["i"]: r for r in records if "i" in r}
        outputs: dict[int, list[Any]] = {}  # assert -> its stage-1 outputs, in order
        stopped_at = len(plans)  # the first assert whose stage-1 tests did not all succeed
        for test_index, index in enumerate(owners):
            record = results.get(test_index)
            if record is None or record.get("s") != "ok":
                stopped_at = index
                break
            outputs.setdefault(index, []).append(record.get("out"))
        checked = await self._check_split_asserts(tests, plans, outputs, stopped_at)
        if isinstance(checked, CheckResult):
            return checked
        for index, (plan, expected) in enumerate(plans):
            if index == stopped_at:
                # the child stopped here; the asserts before it were judged already
                return failure or CheckResult.fail(
                    VerdictReason.RUNTIME_ERROR, {"error": f"no result for assert {index}"}
                )
            got: Any = None
            if plan["kind"] == "value":
                got = _harness.decode(outputs[index][0])
                held = _plain_equal(got, expected)
            elif plan["kind"] == "probes":
                record = checked[index]
                if record.get("s") != "ok":
                    return CheckResult.fail(
                        _KIND_REASON.get(record.get("s", "error"), VerdictReason.RUNTIME_ERROR),
                        {
                            "test": index,
                            "assert": clip(tests.asserts[index], 500),
                            "error": record.get("e", ""),
                        },
                    )
                held = bool(record.get("v"))
                got = [_harness.decode(v) for v in outputs[index]]
            else:
                held = True  # ran whole next to the program, and did not raise
            if not held:
                return CheckResult.fail(
                    VerdictReason.TEST_FAILED,
                    {
                        "test": index,
                        "assert": clip(tests.asserts[index], 500),
                        "got": clip(_short_repr(got), 500),
                    },
                )
        if failure is not None:
            return failure
        return CheckResult.ok({"asserts": len(plans), "sandbox": _layers(records)})

    async def _check_split_asserts(
        self,
        tests: CodeTests,
        plans: list[tuple[dict[str, Any], Any]],
        outputs: dict[int, list[Any]],
        stopped_at: int,
    ) -> dict[int, dict[str, Any]] | CheckResult:
        """Stage 2: evaluate the split asserts on their probes' values, without the program."""
        split = [i for i, (plan, _) in enumerate(plans[:stopped_at]) if plan["kind"] == "probes"]
        if not split:
            return {}
        job = self._job(
            "checks",
            "",
            len(split) * (self.test_timeout_s + 0.2) + self.limits.load_timeout_s,
            setup=tests.setup,
            checks=[{"expr": plans[i][0]["check"], "values": outputs[i]} for i in split],
            test_timeout=self.test_timeout_s,
        )
        report = await self._run(job)
        if isinstance(report, CheckResult):
            return report
        records, failure = report
        found = {r["i"]: r for r in records if "i" in r}
        checked: dict[int, dict[str, Any]] = {}
        for position, index in enumerate(split):
            record = found.get(position)
            if record is None:
                return CheckResult.fail(
                    VerdictReason.VERIFIER_ERROR,
                    {
                        "error": "the asserts could not be evaluated",
                        "cause": failure.details if failure is not None else None,
                    },
                )
            checked[index] = record
        return checked

    async def _check_stdio(self, tests: CodeTests, code: str) -> CheckResult:
        job = self._job(
            "stdio",
            code,
            len(tests.stdio) * (self.test_timeout_s + 0.3) + 1.0,
            stdin=[case.stdin for case in tests.stdio],
            test_timeout=self.test_timeout_s,
        )
        report = await self._run(job)
        if isinstance(report, CheckResult):
            return report
        records, failure = report
        if failure is not None and failure.reason is VerdictReason.SANDBOX_VIOLATION:
            return failure
        results = {r["i"]: r for r in records if "i" in r}
        for index, case in enumerate(tests.stdio):
            record = results.get(index)
            if record is None or record.get("s") != "ok":
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
                        "got": clip(record["stdout"], 300),
                    },
                )
        if failure is not None:
            return failure
        return CheckResult.ok({"stdio": len(tests.stdio), "sandbox": _layers(records)})

    # --- running ---------------------------------------------------------------------------------

    def _job(self, mode: str, code: str, wall_s: float, **fields: Any) -> dict[str, Any]:
        return {
            # in bubblewrap, the runner's /tmp is already a directory of its own
            "tmp_root": None if self._bwrap is not None else self._sandbox_root(),
            "bwrap": self._bwrap is not None,
            "mode": mode,
            "code": code,
            "wall_s": min(wall_s, self.max_wall_s),
            "limits": attrs.asdict(self.limits),
            "namespaces": self.namespaces,
            "landlock": self.landlock,
            "sample_namespaces": "auto"
            if self.sample_namespaces is None
            else self.sample_namespaces,
            **fields,
        }

    async def _run(
        self, job: dict[str, Any]
    ) -> CheckResult | tuple[list[dict[str, Any]], CheckResult | None]:
        """Run a job; return (records, failure or None), or a CheckResult if nothing usable."""
        outcome: JobOutcome = await self._pool.run(
            job, timeout_s=job["wall_s"] + self.limits.startup_s + 20
        )
        if not outcome.ok:
            reason = (
                VerdictReason.TIMEOUT
                if outcome.status == "timeout"
                else VerdictReason.VERIFIER_ERROR
            )
            return CheckResult.fail(reason, {"error": f"sandbox runner: {outcome.error}"})
        report: dict[str, Any] = outcome.value
        records = await anyio.to_thread.run_sync(_parse_records, report["data"])
        return records, _failure(report, records)


def _compare_outputs(
    compare: _EvalplusComparator,
    expected_groups: list[tuple[int, str, list[Any], list[Any]]],
    records: list[dict[str, Any]],
    failures: list[CheckResult | None],
    owner: dict[tuple[int, int], int],
) -> CheckResult | None:
    """Compare a run's outputs with the expected ones, in test order; None when all match.

    ``failures`` are the parts' failures and ``owner`` maps (group, test) to its part, so that
    a missing output reports why the part that should have produced it stopped.
    """
    outputs: dict[tuple[int, int], Any] = {}
    for record in records:
        if "g" in record and record.get("s") == "ok":
            outputs[(record["g"], record["i"])] = record
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
                got = _harness.decode(found["out"])
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
                        "input": clip(_short_repr(inp), 500),
                        "expected": clip(_short_repr(expected[index]), 500),
                        "got": clip(_short_repr(got), 500),
                    },
                )
    return next((f for f in failures if f is not None), None)


def _parse_records(data: bytes) -> list[dict[str, Any]]:
    records = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            break  # a torn last line (the child was killed mid-write)
        if isinstance(record, dict):
            records.append(record)
    return records


def _layers(records: list[dict[str, Any]]) -> str:
    """The isolation a run had, as reported by the runner and the sample (e.g. net+...)."""
    layers: list[str] = next((r["layers"] for r in records if r.get("ev") == "layers"), [])
    namespaces: list[str] = next((r["ns"] for r in records if r.get("ev") == "ns"), [])
    return "+".join([*namespaces, *layers]) or "none"


def _failure(report: dict[str, Any], records: list[dict[str, Any]]) -> CheckResult | None:
    """Turn what went wrong in a run into a failing result (None when every test ran)."""
    exit_code = report["exit"]
    tail = clip(report.get("output_tail", ""), 800)
    base = {"sandbox": _layers(records)}
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
    if report["status"] == "timeout":
        return CheckResult.fail(VerdictReason.TIMEOUT, dict(base, error="wall-time limit"))
    if report["status"] == "result-limit":
        return CheckResult.fail(VerdictReason.OUTPUT_LIMIT, dict(base, error="results too large"))
    for record in records:
        event = record.get("ev")
        if event == "syntax-error":
            return CheckResult.fail(VerdictReason.SYNTAX_ERROR, dict(base, error=record["e"]))
        if event == "load-error":
            return CheckResult.fail(
                _KIND_REASON.get(record.get("k", "error"), VerdictReason.RUNTIME_ERROR),
                dict(base, error=record["e"]),
            )
        status = record.get("s")
        if status is not None and status != "ok":
            details = dict(base, error=record.get("e", ""), test=record.get("i"))
            if "g" in record:
                details["group"] = "base" if record["g"] == 0 else "plus"
            if status == "signal" and record.get("sig") == _SIGSYS:
                return CheckResult.fail(VerdictReason.SANDBOX_VIOLATION, details)
            return CheckResult.fail(_KIND_REASON.get(status, VerdictReason.RUNTIME_ERROR), details)
    if exit_code in (128 + 9, 128 + 24):  # SIGKILL (hard CPU limit), SIGXCPU
        return CheckResult.fail(VerdictReason.TIMEOUT, dict(base, error="CPU-time limit"))
    if not any(r.get("ev") == "done" for r in records):
        return CheckResult.fail(
            VerdictReason.RUNTIME_ERROR,
            dict(
                base, error=f"the program ended before the tests finished (exit code {exit_code})"
            ),
        )
    return None


_KIND_REASON = {
    "timeout": VerdictReason.TIMEOUT,
    "memory": VerdictReason.MEMORY_LIMIT,
    "violation": VerdictReason.SANDBOX_VIOLATION,
    "output": VerdictReason.OUTPUT_LIMIT,
    "assert": VerdictReason.TEST_FAILED,
    "missing": VerdictReason.RUNTIME_ERROR,
    "error": VerdictReason.RUNTIME_ERROR,
}


def _read_cache(path: Path) -> tuple[dict[str, Any] | None, int]:
    """A cached reference and its size in bytes ((None, 0) when absent or unreadable)."""
    try:
        data = path.read_bytes()
        raw: dict[str, Any] = json.loads(data)
        return raw, len(data)
    except (OSError, ValueError):
        return None, 0


def _write_cache(path: Path, raw: dict[str, Any]) -> int:
    """Write a reference atomically; return its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    data = json.dumps(raw, separators=(",", ":"))
    tmp.write_text(data)
    tmp.replace(path)
    return len(data)


def _decode_reference(raw: dict[str, Any]) -> _Reference:
    return _Reference(
        base=[_harness.decode(v) for v in raw["base"]],
        plus=[_harness.decode(v) for v in raw["plus"]],
        base_time=list(raw["base_time"]),
        plus_time=list(raw["plus_time"]),
    )


def _evalplus_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("evalplus")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "none"


_EVALPLUS_LOCK = threading.Lock()
_EVALPLUS: dict[str, Any] = {}


def _load_evalplus() -> dict[str, Any]:
    """Import what is reused from evalplus, once, from one thread at a time.

    evalplus pulls in numpy and ``datasets``; two threads importing that graph at once can
    see half-initialized modules, so every use goes through this function first.
    """
    with _EVALPLUS_LOCK:
        if not _EVALPLUS:
            import numpy
            from evalplus.data.mbpp import mbpp_deserialize_inputs
            from evalplus.eval import _special_oracle, is_floats

            _EVALPLUS.update(
                numpy=numpy,
                deserialize=mbpp_deserialize_inputs,
                oracle=_special_oracle,
                is_floats=is_floats,
            )
        return _EVALPLUS


def _evalplus_not_none() -> list[str]:
    return list(_EVALPLUS["oracle"].MBPP_OUTPUT_NOT_NONE_TASKS) if _EVALPLUS else []


class _EvalplusComparator:
    """evalplus 0.3.1's output check (``unsafe_execute``), applied to decoded plain values."""

    def __init__(self, entry_point: str, atol: float, dataset: str) -> None:
        evalplus = _load_evalplus()
        self._oracle = evalplus["oracle"]
        self._is_floats: Callable[[Any], bool] = evalplus["is_floats"]
        self._np = evalplus["numpy"]
        self.entry_point = entry_point
        self.initial_atol = atol
        self.atol = atol
        self.dataset = dataset

    def reset(self) -> None:
        """Start a new group (evalplus checks base and plus in separate processes)."""
        self.atol = self.initial_atol

    def __call__(self, out: Any, exp: Any, inp: Any) -> bool:
        np = self._np
        try:
            exact = _plain_equal(out, exp)
            if self.dataset == "mbpp":
                name, oracle = self.entry_point, self._oracle
                if name == "are_equivalent":
                    exact = True
                elif name == "sum_div":
                    exact = exact or _plain_equal(out, 0)
                elif name == "surface_Area":
                    exact = exact or abs(out - oracle._surface_Area(*inp)) <= self.atol
                elif name == "digit_distance_nums":
                    exact = exact or _plain_equal(out, oracle._digit_distance_nums(*inp))
                elif name in oracle.MBPP_OUTPUT_SET_EQ_TASKS:
                    exact = set(out) == set(exp)
                elif name in oracle.MBPP_OUTPUT_NOT_NONE_TASKS:
                    if isinstance(out, bool):
                        exact = out == exp
                    elif isinstance(out, _harness.NotNone):
                        exact = exp == out.flag
                    else:
                        exact = False
            if self.atol == 0 and self._is_floats(exp):
                self.atol = 1e-6  # evalplus keeps this for the rest of the group
            if not exact and self.atol != 0:
                if type(out) is not type(exp):
                    return False
                if isinstance(exp, list | tuple) and len(out) != len(exp):
                    return False
                return bool(np.allclose(out, exp, rtol=1e-07, atol=self.atol))
            return bool(exact)
        except Exception:
            return False


def _plain_equal(a: Any, b: Any) -> bool:
    """``a == b`` for decoded plain values (unencodable results never equal anything)."""
    if isinstance(a, _harness.Opaque | _harness.NotNone) or isinstance(
        b, _harness.Opaque | _harness.NotNone
    ):
        return False
    try:
        return bool(a == b)
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


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return "<unrepresentable>"
    return text
