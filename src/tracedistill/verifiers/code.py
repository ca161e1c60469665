"""CodeVerifier: run the program in a response against the problem's tests, in the sandbox.

Three test formats (:class:`~tracedistill.records.CodeTests`): evalplus-style function tests
(MBPP+: the entry point on base and plus inputs, outputs compared by evalplus's rules), assert
lists and stdin/stdout cases. The sandboxed child only reports what the code returned or
printed; the comparison with the expected values happens here, in the parent, so code that
fakes success (exits early, rigs ``__eq__``, patches builtins) cannot pass a test it did not
solve. Reference outputs are computed once, in the sandbox, and cached on disk.

The parts live in private modules: the message protocol (``_protocol``), the value codec
(``_codec``), the harness in the child (``_harness``), test groups and their split across
runners (``_parts``), verdicts from runs (``_checks``), evalplus's comparison (``_evalplus``),
the reference cache (``_references``), assert plans (``_asserts``) and the isolation itself
(``sandbox``, ``_bubblewrap``).
"""

from __future__ import annotations

import ast
import contextvars
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import attrs
import orjson

from tracedistill.errors import SandboxError, VerifierError
from tracedistill.records import (
    CodeTests,
    FunctionTests,
    Problem,
    TaskKind,
    Verdict,
    VerdictReason,
    content_hash,
)
from tracedistill.verifiers._asserts import (
    bound_names,
    first_stage,
    first_stage_outputs,
    judge_asserts,
    plan_assert,
)
from tracedistill.verifiers._bubblewrap import (
    bubblewrap_command,
    bubblewrap_problem,
    find_bubblewrap,
)
from tracedistill.verifiers._checks import (
    SandboxRun,
    failure_of,
    judge_outputs,
    judge_stdio,
    layers,
    read_records,
    stdout_matches,
)
from tracedistill.verifiers._evalplus import (
    EvalplusComparator,
    FunctionInputs,
    evalplus_loaded,
    evalplus_version,
    load_evalplus,
    output_mode,
)
from tracedistill.verifiers._parts import function_groups, plan_parts, test_owners
from tracedistill.verifiers._protocol import Group, Job, OutputMode, Record
from tracedistill.verifiers._references import Reference, ReferenceCache, default_cache_dir
from tracedistill.verifiers.base import CheckResult, Verifier
from tracedistill.verifiers.extract import CodeExtraction, extract_code
from tracedistill.verifiers.pool import JobOutcome, WorkerPool
from tracedistill.verifiers.sandbox import SandboxLimits

__all__ = ["EVALPLUS_METADATA_KEY", "CodeVerifier", "stdout_matches"]

log = logging.getLogger(__name__)

#: ``problem.metadata[EVALPLUS_METADATA_KEY] = {"dataset": "mbpp", "task_id": "Mbpp/2"}`` marks
#: an evalplus problem: its JSON inputs go through evalplus's own deserialization (tuples, sets,
#: complex numbers) and its outputs are compared with evalplus's special oracles.
EVALPLUS_METADATA_KEY = "evalplus"

_HANDLER = "tracedistill.verifiers.sandbox:handle"
# 2: asserts split into probes and checks; 3: iterators, views, deques, ranges, numpy arrays
# and other standard values compared as evalplus compares them, per-test limits held by the
# runner.
_LOGIC_VERSION = "3"

#: A run's outcome: a SandboxRun, or a CheckResult when nothing usable came back.
_Report = CheckResult | SandboxRun
#: Seconds the current check's sandboxed runs took (each check sets its own list).
_SPENT: contextvars.ContextVar[list[float]] = contextvars.ContextVar("tracedistill_code_spent")


def _code_tests(problem: Problem) -> CodeTests:
    if problem.kind is not TaskKind.CODE or problem.tests is None:
        raise VerifierError(f"CodeVerifier got a {problem.kind} problem {problem.id!r}")
    return problem.tests


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


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
        self.protocol = f"{self.extraction.protocol}; it passes every test"  # reports show it
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
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
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
                evalplus_version(),
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
        self._references = ReferenceCache(self.cache_dir)
        # Per FunctionTests object (held, so that its id is not reused): deserialized inputs.
        self._inputs = FunctionInputs()
        self._capabilities: dict[str, Any] | None = None
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

    @property
    def work_dir(self) -> Path | None:
        """The verifier's own temporary directory, under which every sample's working
        directory (and, with bubblewrap, every runner's ``/tmp``) lives; None until the first
        sample runs and after :meth:`aclose`, which removes it.
        """
        return Path(self._tmp_root) if self._tmp_root is not None else None

    @property
    def backend(self) -> Literal["bubblewrap", "fork"] | None:
        """How runners start: ``bubblewrap`` (each in its own container) or ``fork`` (plain
        processes); None until decided, which :meth:`start` or the first check does.
        """
        if not self._bwrap_decided:
            return None
        return "bubblewrap" if self._bwrap is not None else "fork"

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
        tests = _code_tests(problem)
        entry = tests.function.entry_point if tests.function is not None else None
        code, how = extract_code(response, self.extraction, entry_point=entry)
        return await self._check_program(problem, code, extraction=how)

    async def check_code(
        self, problem: Problem | CodeTests, code: str, *, extraction: str | None = None
    ) -> Verdict:
        """Judge a program (or a response holding one) against tests: the simple path.

        Takes a :class:`Problem` or bare :class:`CodeTests` and returns a :class:`Verdict`
        (no Trace needed), like :meth:`MathVerifier.check_answer`: ``passed``, ``reason``,
        ``details`` and ``elapsed_s``, the seconds the program's own sandboxed runs took. Its
        ``trace_key`` is a content hash of (problem id, code); it is a pure function of the
        problem, the code and :attr:`version`.
        """
        result = await self._check_program(problem, code, extraction=extraction)
        problem_id = problem.id if isinstance(problem, Problem) else "code-tests"
        return Verdict(
            trace_key=content_hash([problem_id, code], prefix="code-"),
            problem_id=problem_id,
            verifier=self.name,
            verifier_version=self.version,
            passed=result.passed,
            reason=result.reason,
            details=result.details,
            elapsed_s=result.elapsed_s,
        )

    async def _check_program(
        self, problem: Problem | CodeTests, code: str, *, extraction: str | None = None
    ) -> CheckResult:
        """Run a program against a problem's tests (or bare :class:`CodeTests`).

        ``code`` is a program, or a model's response holding one (a text that is not valid
        Python goes through the verifier's :class:`CodeExtraction`, as in :meth:`check`).
        ``extraction`` records how the program was found (default ``given`` for a program).
        The result says whether every test passed, why not, and ``elapsed_s``: the seconds
        the program's sandboxed runs took (not the time spent waiting for a free runner).
        """
        if isinstance(problem, CodeTests):
            problem = Problem(
                id="code-tests", kind=TaskKind.CODE, prompt="(tests given directly)", tests=problem
            )
        tests = _code_tests(problem)
        if extraction is None:
            extraction = "given"
            if not _parses(code):
                entry = tests.function.entry_point if tests.function is not None else None
                code, extraction = extract_code(code, self.extraction, entry_point=entry)
        await self.capabilities()
        if not code.strip():
            return CheckResult.fail(VerdictReason.NO_ANSWER, {"extraction": extraction})
        spent: list[float] = []
        token = _SPENT.set(spent)
        try:
            result = await self._check_tests(problem, tests, code)
        finally:
            _SPENT.reset(token)
        details: dict[str, Any] = {"extraction": extraction, "tests": tests.count}
        details.update(result.details)
        return attrs.evolve(result, details=details, elapsed_s=sum(spent))

    async def _check_tests(self, problem: Problem, tests: CodeTests, code: str) -> CheckResult:
        """Run each test format the problem has, stopping at the first that fails."""
        result: CheckResult | None = None
        if tests.function is not None:
            result = await self._check_function(problem, tests.function, code)
        if (result is None or result.passed) and tests.asserts:
            result = await self._check_asserts(tests, code)
        if (result is None or result.passed) and tests.stdio:
            result = await self._check_stdio(tests, code)
        assert result is not None
        return result

    # --- function tests (evalplus) -------------------------------------------------------------

    async def _check_function(self, problem: Problem, fn: FunctionTests, code: str) -> CheckResult:
        if not evalplus_loaded():  # the first import takes seconds; then no thread hop
            await anyio.to_thread.run_sync(load_evalplus)
        meta = problem.metadata.get(EVALPLUS_METADATA_KEY) or {}
        dataset = str(meta.get("dataset", ""))
        base_inputs, plus_inputs = await self._inputs.get(fn, meta)
        reference = await self._reference(problem, fn, base_inputs, plus_inputs, dataset)
        if isinstance(reference, CheckResult):
            return reference
        groups, costs = function_groups(
            (base_inputs, reference.base_time),
            (plus_inputs, reference.plus_time),
            min_limit_s=self.min_time_limit_s,
            factor=self.time_limit_factor,
            default_s=self.test_timeout_s,
        )
        parts = self._split(groups, costs)
        mode = output_mode(dataset, fn.entry_point, reference=False)
        jobs = [
            self._job(
                "function",
                code,
                sum(min(60.0, sum(g["limits"])) + 1.0 for g in part) + self.limits.load_timeout_s,
                entry_point=fn.entry_point,
                groups=part,
                output_mode=mode,
            )
            for part in parts
        ]
        reports = await self._run_parts(jobs)
        runs: list[SandboxRun] = []
        failures: list[CheckResult | None] = []
        for report in reports:
            if isinstance(report, CheckResult):
                if report.reason is not VerdictReason.TIMEOUT or len(reports) == 1:
                    return report
                failures.append(report)
            elif report is None:  # cancelled: an earlier part had failed already
                failures.append(None)
            else:
                runs.append(report)
                failures.append(report.failure)
        for part_failure in failures:
            if part_failure is not None and part_failure.reason is VerdictReason.SANDBOX_VIOLATION:
                return part_failure
        owner = test_owners(parts)
        expected_groups = [
            (group_id, name, inputs, expected)
            for group_id, (name, inputs, expected) in enumerate(
                (("base", base_inputs, reference.base), ("plus", plus_inputs, reference.plus))
            )
            if inputs
        ]
        compare = EvalplusComparator(fn.entry_point, fn.atol, dataset)
        verdict = await judge_outputs(compare, expected_groups, runs, failures, owner)
        if verdict is not None:
            return verdict
        return CheckResult.ok(
            {
                "base": "pass",
                "plus": "pass" if plus_inputs else None,
                "sandbox": layers([r for run in runs for r in run.records]),
            }
        )

    def _split(self, groups: list[Group], costs: list[list[float] | None]) -> list[list[Group]]:
        """Cut the test groups into parts for several runners (see :func:`plan_parts`)."""
        return plan_parts(groups, costs, split_above_s=self.split_above_s, workers=self.workers)

    async def _run_parts(self, jobs: list[Job]) -> list[_Report | None]:
        """Run the parts of one sample at once; a failed part cancels the parts after it.

        Tests after a failure cannot change the verdict (the first failing test decides it),
        so their runs are stopped; parts before it still finish. A cancelled part is None.
        The sample's run time is that of its longest part (they run at once).
        """
        if len(jobs) == 1:
            return [await self._run(jobs[0])]
        reports: list[_Report | None] = [None] * len(jobs)
        spent = [0.0] * len(jobs)
        scopes = [anyio.CancelScope() for _ in jobs]

        async def run_part(index: int) -> None:
            own: list[float] = []
            _SPENT.set(own)  # this task's copy of the context only
            with scopes[index]:
                report = await self._run(jobs[index])
                reports[index] = report
                if isinstance(report, CheckResult) or report.failure is not None:
                    for later in scopes[index + 1 :]:
                        later.cancel()
            spent[index] = sum(own)

        async with anyio.create_task_group() as group:
            for index in range(len(jobs)):
                group.start_soon(run_part, index)
        _note_spent(max(spent))
        return reports

    async def _reference(
        self,
        problem: Problem,
        fn: FunctionTests,
        base_inputs: list[Any],
        plus_inputs: list[Any],
        dataset: str,
    ) -> Reference | CheckResult:
        if fn.expected_base is not None and (not plus_inputs or fn.expected_plus is not None):
            return Reference(
                base=list(fn.expected_base),
                plus=list(fn.expected_plus or ()),
                base_time=[],
                plus_time=[],
            )
        assert fn.reference_solution is not None
        mode = output_mode(dataset, fn.entry_point, reference=True)
        meta = str(problem.metadata.get(EVALPLUS_METADATA_KEY))
        key = self._references.key(problem, fn, [_LOGIC_VERSION, mode, dataset, meta])

        async def compute() -> dict[str, Any] | CheckResult:
            computed = await self._compute_reference(fn, base_inputs, plus_inputs, mode)
            if isinstance(computed, CheckResult):
                log.warning("reference solution of %s failed: %s", problem.id, computed.details)
            return computed

        reference = await self._references.get(key, compute)
        if isinstance(reference, Reference):
            self._costs[problem.id] = reference.cost_s
        return reference

    async def _compute_reference(
        self, fn: FunctionTests, base_inputs: list[Any], plus_inputs: list[Any], mode: OutputMode
    ) -> dict[str, Any] | CheckResult:
        groups: list[Group] = [
            {"id": 0, "start": 0, "inputs": base_inputs, "limits": [60.0] * len(base_inputs)},
            {"id": 1, "start": 0, "inputs": plus_inputs, "limits": [60.0] * len(plus_inputs)},
        ]
        job = self._job(
            "function",
            fn.reference_solution or "",
            self.max_wall_s,
            entry_point=fn.entry_point,
            groups=groups,
            output_mode=mode,
        )
        report = await self._run(job, own=False)
        failure = report if isinstance(report, CheckResult) else report.failure
        if failure is not None:
            details = dict(failure.details, note="the reference solution failed in the sandbox")
            return CheckResult.fail(VerdictReason.VERIFIER_ERROR, details)
        assert isinstance(report, SandboxRun)
        raw: dict[str, Any] = {"base": [], "plus": [], "base_time": [], "plus_time": []}
        for record in report.records:
            if "group" in record:
                name = "base" if record["group"] == 0 else "plus"
                raw[name].append(record.get("out"))
                raw[f"{name}_time"].append(record.get("time"))
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
        plans = [plan_assert(src, bound_names(tests.setup)) for src in tests.asserts]
        stage1, owners = first_stage(plans)
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
        if report.failure is not None and report.failure.reason is VerdictReason.SANDBOX_VIOLATION:
            return report.failure
        outputs, stopped_at = first_stage_outputs(report.records, owners, len(plans))
        checked = await self._check_split_asserts(tests, plans, outputs, stopped_at)
        if isinstance(checked, CheckResult):
            return checked
        return judge_asserts(tests.asserts, plans, outputs, checked, stopped_at, report)

    async def _check_split_asserts(
        self,
        tests: CodeTests,
        plans: list[tuple[dict[str, Any], Any]],
        outputs: dict[int, list[Any]],
        stopped_at: int,
    ) -> dict[int, Record] | CheckResult:
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
        found = {r["test"]: r for r in report.records if "test" in r}
        if any(position not in found for position in range(len(split))):
            cause = report.failure.details if report.failure is not None else None
            return CheckResult.fail(
                VerdictReason.VERIFIER_ERROR,
                {"error": "the asserts could not be evaluated", "cause": cause},
            )
        return {index: found[position] for position, index in enumerate(split)}

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
        return judge_stdio(tests.stdio, report)

    # --- running ---------------------------------------------------------------------------------

    def _job(self, mode: str, code: str, wall_s: float, **fields: Any) -> Job:
        job: Job = {
            # in bubblewrap, the runner's /tmp is already a directory of its own
            "tmp_root": None if self._bwrap is not None else self._sandbox_root(),
            "bwrap": self._bwrap is not None,
            "mode": mode,  # type: ignore[typeddict-item]
            "code": code,
            "wall_s": min(wall_s, self.max_wall_s),
            "limits": attrs.asdict(self.limits),  # type: ignore[typeddict-item]
            "namespaces": self.namespaces,
            "landlock": self.landlock,
            "sample_namespaces": "auto"
            if self.sample_namespaces is None
            else self.sample_namespaces,
        }
        job.update(fields)  # type: ignore[typeddict-item]
        return job

    async def _run(self, job: Job, *, own: bool = True) -> _Report:
        """Run a job: its SandboxRun, or a CheckResult if nothing usable came back.

        ``own``: the run is the checked program's (its time counts in the verdict's
        ``elapsed_s``), not a reference solution's.
        """
        outcome: JobOutcome = await self._pool.run(
            job, timeout_s=job["wall_s"] + self.limits.startup_s + 20
        )
        if not outcome.ok:
            if own:
                _note_spent(outcome.elapsed_s)
            reason = (
                VerdictReason.TIMEOUT
                if outcome.status == "timeout"
                else VerdictReason.VERIFIER_ERROR
            )
            return CheckResult.fail(reason, {"error": f"sandbox runner: {outcome.error}"})
        report: dict[str, Any] = outcome.value
        if own:
            _note_spent(float(report["wall_s"]))
        records = await read_records(report["data"])
        failure = failure_of(report, records)
        return SandboxRun(records, failure, float(report["wall_s"]), len(report["data"]))


def _note_spent(seconds: float) -> None:
    """Count a sandboxed run's seconds towards the current check's ``elapsed_s``."""
    spent = _SPENT.get(None)
    if spent is not None:
        spent.append(seconds)
