from __future__ import annotations

import importlib.metadata
import os
import threading
import time
from pathlib import Path

import anyio
import pytest

from tracedistill.errors import VerifierError
from tracedistill.records import (
    FinishReason,
    Message,
    Problem,
    TaskKind,
    Trace,
    Verdict,
    VerdictReason,
)
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
    c = MathVerifier(workers=1, rules="math-verify")
    assert len({a.version, b.version, c.version}) == 3 and a.name == b.name == "math"
    assert a.version.startswith("2+") and c.version.startswith("1+")
    # math-verify alone with default settings keeps the version string of earlier releases,
    # so the verdicts they stored are reused.
    mv = importlib.metadata.version("math-verify")
    assert c.version == f"1+mv{mv}+answer_is-last_math+w4000+t0+p1"
    deeper = MathVerifier(workers=1, extraction=MathExtraction(max_depth=20))
    assert deeper.version == a.version + "+d20"
    assert MathVerifier(workers=1, extraction="boxed").version == b.version
    with pytest.raises(ValueError, match="extraction"):
        MathVerifier(extraction="strict")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rules"):
        MathVerifier(rules="sympy")  # type: ignore[arg-type]


async def test_boxed_mode_counts_only_the_final_boxed_answer() -> None:
    responses = {
        "boxed": (r"First \boxed{2}, then \boxed{\frac12}.", True),
        "answer_is": ("The final answer is 1/2.", True),
        "last_math": ("We get $x = 3$, so $\\frac{1}{2}$", True),
        "none": ("one half", False),
    }
    async with MathVerifier(workers=1, extraction="boxed") as strict:
        assert strict.protocol == "the final \\boxed{} only"
        for how, (text, _) in responses.items():
            verdict = await strict.check_answer(r"\frac{1}{2}", text)
            assert verdict.passed == (how == "boxed"), how
            assert verdict.details["extraction"] == ("boxed" if how == "boxed" else "none")
            if how != "boxed":
                assert verdict.reason is VerdictReason.NO_ANSWER
    async with MathVerifier(workers=1) as lenient:
        assert "answer is X" in lenient.protocol and "$...$" in lenient.protocol
        for how, (text, lenient_passes) in responses.items():
            verdict = await lenient.check_answer(r"\frac{1}{2}", text)
            assert (verdict.passed, verdict.details["extraction"]) == (lenient_passes, how)


async def test_check_answer_is_a_verdict_and_a_pure_function(verifier: MathVerifier) -> None:
    first = await verifier.check_answer(r"\frac{1}{2}", r"so \boxed{0.5}")
    again = await verifier.check_answer(r"\frac{1}{2}", r"so \boxed{0.5}")
    other = await verifier.check_answer(r"\frac{1}{2}", r"so \boxed{0.6}")
    assert first.passed and not other.passed
    assert (first.verifier, first.verifier_version) == ("math", verifier.version)
    assert first.trace_key == again.trace_key != other.trace_key
    assert first.problem_id == other.problem_id
    assert first.details["extracted"] == "0.5" and first.details["extraction"] == "boxed"
    assert type(first).from_dict(first.to_dict()) == first


def test_check_answer_sync_in_a_script() -> None:
    # A script's thread: no event loop (the test's own thread has anyio's).
    verifier = MathVerifier(workers=1)
    verdicts: list[Verdict] = []
    thread = threading.Thread(
        target=lambda: verdicts.append(verifier.check_answer_sync("3", "\\boxed{3}"))
    )
    thread.start()
    thread.join()
    assert verdicts[0].passed and not verifier.pool.pids  # the workers are stopped again


async def test_check_answer_sync_inside_a_loop_names_the_await_form() -> None:
    with pytest.raises(VerifierError, match=r"await verifier\.check_answer"):
        MathVerifier(workers=1).check_answer_sync("3", r"\boxed{3}")


def test_settings_are_read_only() -> None:
    v = MathVerifier(workers=3, timeout_s=4)
    assert (v.workers, v.timeout_s, v.rules, v.extraction) == (3, 4, "exact", MathExtraction())
    for name in ("workers", "timeout_s", "rules", "extraction", "protocol"):
        with pytest.raises(AttributeError):
            setattr(v, name, None)


async def test_verdicts_of_an_earlier_version_stay_beside_new_ones(tmp_path: Path) -> None:
    # A wrong answer math-verify accepted (logic version 1) keeps that stored verdict; the
    # current rules judge it again under their own version, stored beside it.
    problem = Problem(kind=TaskKind.MATH, prompt="p", answer=r"\frac{1}{2^{99}}")
    store = JsonlTraceStore(tmp_path / "store")
    await store.add_problems([problem])
    trace = _trace(problem, r"\boxed{\frac{1}{2^{98}}}")
    await store.add_trace(trace)
    async with MathVerifier(workers=1, rules="math-verify") as old:
        (before,) = await old.verify_many([(problem, trace)], store=store)
    async with MathVerifier(workers=1) as new:
        (after,) = await new.verify_many([(problem, trace)], store=store)
    assert before.passed and not after.passed
    stored = {v.verifier_version: v for v in store.verdicts(trace_key=trace.key)}
    assert set(stored) == {old.version, new.version}
    assert stored[old.version].passed and stored[old.version].created_at == before.created_at
    async with MathVerifier(workers=1, rules="math-verify") as old_again:
        (reused,) = await old_again.verify_many([(problem, trace)], store=store)
    assert reused.created_at == before.created_at
    store.close()


async def test_wrong_problem_kind_is_an_error(verifier: MathVerifier) -> None:
    from tracedistill.records import CodeTests

    code = Problem(kind=TaskKind.CODE, prompt="p", tests=CodeTests(asserts=["assert True"]))
    with pytest.raises(VerifierError):
        await verifier.check(code, "x")
    with pytest.raises(VerifierError):
        await verifier.verify(HALF, _trace(code, "x"))
