from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from tracedistill.errors import VerifierError
from tracedistill.records import FinishReason, Message, Problem, TaskKind, Trace, VerdictReason
from tracedistill.store import JsonlTraceStore
from tracedistill.verifiers import MathExtraction, MathVerifier

pytestmark = pytest.mark.anyio

HALF = Problem(kind=TaskKind.MATH, prompt="What is 1/2 as a decimal?", answer=r"\frac{1}{2}")


def _trace(problem: Problem, answer: str, index: int = 0, **fields: object) -> Trace:
    return Trace(
        problem_id=problem.id,
        teacher="t",
        model="m",
        prompt=[Message("user", problem.prompt)],
        answer=answer,
        sample_index=index,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
async def verifier() -> object:
    async with MathVerifier(workers=2, timeout_s=3) as v:
        yield v


@pytest.mark.parametrize(
    ("response", "passed", "reason"),
    [
        (r"So it is \boxed{0.5}.", True, VerdictReason.PASSED),
        (r"\boxed{\dfrac12}", True, VerdictReason.PASSED),
        (r"\boxed{0.6}", False, VerdictReason.WRONG_ANSWER),
        ("I do not know.", False, VerdictReason.NO_ANSWER),
        ("The final answer is 1/2.", True, VerdictReason.PASSED),
        (r"\boxed{9^{9^{9}}}", False, VerdictReason.TIMEOUT),
    ],
)
async def test_check(
    verifier: MathVerifier, response: str, passed: bool, reason: VerdictReason
) -> None:
    result = await verifier.check(HALF, response)
    assert (result.passed, result.reason) == (passed, reason)
    assert "extracted" in result.details


async def test_gold_is_compared_first(verifier: MathVerifier) -> None:
    # math-verify is not symmetric; an interval gold must not accept a single endpoint.
    problem = Problem(kind=TaskKind.MATH, prompt="p", answer="(1, 2)")
    assert not (await verifier.check(problem, r"\boxed{1}")).passed
    assert (await verifier.check(problem, r"\boxed{(1,2)}")).passed


async def test_parse_golds(verifier: MathVerifier) -> None:
    parsed = await verifier.parse_golds([r"\frac12", "", "}{", "3"])
    assert parsed[0] == r"\frac{1}{2}"
    assert parsed[1] is None and parsed[2] is None
    assert parsed[3] == "3"


async def test_pathological_inputs_fail_fast_and_do_not_stall_others() -> None:
    hostile = [
        "$9^{9^{9}}$ is the answer: $9^{9^{9}}$",
        "x" * 1_000_000,
        r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    ]
    async with MathVerifier(workers=2, timeout_s=2) as v:
        normal = [(HALF, r"\boxed{0.5}")] * 30
        start = time.monotonic()
        results = await v.check_many([(HALF, h) for h in hostile] + normal, progress=False)
        took = time.monotonic() - start
    assert not any(r.passed for r in results[:3])
    assert all(r.passed for r in results[3:])
    assert took < 2 + 1


async def test_hard_timeout_kills_a_stuck_check_and_others_go_on() -> None:
    # Without the prescreen and with math-verify's own timeout out of the way, a bigint
    # power holds the GIL: only killing the worker ends it.
    v = MathVerifier(workers=2, timeout_s=1.5, extraction=MathExtraction(prescreen=False))
    v._soft_timeout = 100
    try:
        times: dict[str, float] = {}
        normal_ok: list[bool] = []

        async def stuck() -> None:
            start = time.monotonic()
            result = await v.check(HALF, r"\boxed{9^{9^{9}}}")
            times["stuck"] = time.monotonic() - start
            assert result.reason is VerdictReason.TIMEOUT

        async def normal() -> None:
            for _ in range(15):
                normal_ok.append((await v.check(HALF, r"\boxed{1/2}")).passed)
            times["normal"] = time.monotonic()

        await v.start()
        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(stuck)
            await anyio.sleep(0.05)
            tg.start_soon(normal)
        assert times["stuck"] < 1.5 + 1
        assert all(normal_ok) and len(normal_ok) == 15
        assert times["normal"] - start < 1.5
        assert v.pool.replaced == 1
    finally:
        await v.aclose()


async def test_works_without_async_with_and_aclose_stops_workers() -> None:
    v = MathVerifier(workers=1, timeout_s=5)
    assert (await v.check(HALF, r"\boxed{.5}")).passed
    pids = v.pool.pids
    assert pids
    await v.aclose()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_verify_many_writes_verdicts_and_skips_judged(
    tmp_path: Path, verifier: MathVerifier
) -> None:
    store = JsonlTraceStore(tmp_path / "store")
    await store.add_problems([HALF])
    traces = [
        _trace(HALF, r"\boxed{0.5}", 0),
        _trace(HALF, r"\boxed{2}", 1),
        _trace(HALF, r"\boxed{0.5}", 2, finish_reason=FinishReason.LENGTH),
        _trace(HALF, "", 3, finish_reason=FinishReason.ERROR, error="HTTP 500"),
    ]
    for trace in traces:
        await store.add_trace(trace)
    verdicts = await verifier.verify_many([(HALF, t) for t in traces], store=store)
    assert [v.reason for v in verdicts] == [
        VerdictReason.PASSED,
        VerdictReason.WRONG_ANSWER,
        VerdictReason.TRUNCATED,
        VerdictReason.NO_ANSWER,
    ]
    assert [v.trace_key for v in verdicts] == [t.key for t in traces]
    assert len(list(store.verdicts(verifier="math"))) == 4
    again = await verifier.verify_many([(HALF, t) for t in traces], store=store)
    assert [v.created_at for v in again] == [v.created_at for v in verdicts]
    assert len(list(store.verdicts(verifier="math"))) == 4
    store.close()


async def test_version_tracks_settings() -> None:
    a = MathVerifier(workers=1)
    b = MathVerifier(workers=1, extraction=MathExtraction(fallbacks=()))
    assert a.version != b.version and a.name == b.name == "math"


async def test_wrong_problem_kind_is_an_error(verifier: MathVerifier) -> None:
    from tracedistill.records import CodeTests

    code = Problem(kind=TaskKind.CODE, prompt="p", tests=CodeTests(asserts=["assert True"]))
    with pytest.raises(VerifierError):
        await verifier.check(code, "x")
    with pytest.raises(VerifierError):
        await verifier.verify(HALF, _trace(code, "x"))
