"""The stage modules on their own: selection, scans off the event loop, the plan's token
estimate, and a corrupt evaluation log reported instead of silently dropped."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from tracedistill.demo import DEMO_PROMPTS, SyntheticTeacher, synthetic_problems
from tracedistill.evaluation import Completion, EvalStore
from tracedistill.evaluation.benchmarks import custom_benchmark
from tracedistill.evaluation.evaluator import Evaluator
from tracedistill.experiment import Experiment, Filters, Run
from tracedistill.experiment.select import select_stage, select_traces
from tracedistill.experiment.train import train_stage
from tracedistill.experiment.verify import verify_stage
from tracedistill.records import FinishReason, Problem, Trace, VerdictReason
from tracedistill.store import JsonlTraceStore
from tracedistill.teachers import generate
from tracedistill.training.base import TrainConfig
from tracedistill.training.local import LocalTrainer
from tracedistill.verifiers.math import MathVerifier


async def _stored(path: Path, problems: list[Problem], n: int = 2) -> JsonlTraceStore:
    store = await JsonlTraceStore.aopen(path)
    await generate(SyntheticTeacher(), problems, store, n=n, progress=False)
    return store


# --- selection -------------------------------------------------------------------------------


def test_selection_keeps_one_trace_per_problem_within_the_length_limit(tmp_path: Path) -> None:
    problems = synthetic_problems("math", 6, seed=1)

    async def main() -> list[Trace]:
        with await _stored(tmp_path / "s", problems) as store:
            return list(store.traces())

    traces = anyio.run(main)
    assert len(traces) == 12
    pool = problems[:4]  # traces of the other problems are not the run's
    chosen = select_traces(traces, pool, Filters())
    assert chosen.report()["eligible"] == 8 and len(chosen.keys) == 4
    by_key = {t.key: t for t in traces}
    assert {by_key[k].sample_index for k in chosen.keys} == {0}
    everything = select_traces(traces, pool, Filters(one_per_problem=False))
    assert len(everything.keys) == 8
    limit = sorted(t.usage.completion_tokens for t in traces)[5]
    short = select_traces(traces, pool, Filters(one_per_problem=False, max_completion_tokens=limit))
    long = sum(
        t.usage.completion_tokens > limit for t in traces if t.problem_id in {p.id for p in pool}
    )
    assert short.dropped_too_long == long and len(short.keys) == 8 - long


# --- whole-store scans run off the event loop ----------------------------------------------------


class _GatedStore:
    """A store whose scans run a task on the event loop and wait for it, mid-scan.

    A scan on the event loop's own thread cannot do that (anyio refuses, the test fails); a
    scan in a worker thread sees the loop run the task while it waits. No duration is measured.
    """

    def __init__(self, store: JsonlTraceStore) -> None:
        self._store = store
        self.scans = 0
        self.beats = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _beat(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.beats += 1

    def _wait_for_the_loop(self) -> None:
        self.scans += 1
        try:
            anyio.from_thread.run(self._beat)
        except RuntimeError as exc:
            raise AssertionError("a whole-store scan ran on the event loop") from exc

    def traces(self, *args: Any, **kwargs: Any) -> Iterator[Trace]:
        self._wait_for_the_loop()
        yield from self._store.traces(*args, **kwargs)

    def get(self, key: str) -> Trace | None:
        self._wait_for_the_loop()
        return self._store.get(key)


class _Verifier:
    name = "fake"
    version = "1"

    async def verify_many(self, pairs: list[Any], **_: Any) -> list[Any]:
        return [SimpleNamespace(passed=True) for _ in pairs]


class _Trainer:
    def __init__(self) -> None:
        self.traces: list[Trace] = []

    async def train(self, traces: list[Trace], config: Any, directory: Path) -> Any:
        self.traces = traces
        return SimpleNamespace(total_steps=1, checkpoints=[], metrics=[], final_checkpoint=None)


def test_store_scans_of_verify_select_and_train_leave_the_event_loop_free(tmp_path: Path) -> None:
    problems = synthetic_problems("math", 30, seed=2)
    trainer = _Trainer()

    async def stage(name: str, gated: _GatedStore) -> dict[str, Any]:
        common: dict[str, Any] = {
            "teacher": SyntheticTeacher().name,
            "task": "math",
            "pool": problems,
        }
        if name == "verify":
            return await verify_stage(
                "r", **common, store=gated, verifier=_Verifier(), progress=False
            )
        if name == "select":
            return await select_stage(
                "r",
                **common,
                filters=Filters(correct_only=False),
                store=gated,
                verifier=_Verifier(),
                train_set=tmp_path / "train_set.json",
            )
        return await train_stage(
            "r",
            trainer=trainer,  # type: ignore[arg-type]
            config=TrainConfig(base_model="x"),
            store=gated,
            train_set=tmp_path / "train_set.json",
            directory=tmp_path / "training",
        )

    async def main() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with await _stored(tmp_path / "s", problems) as store:
            for name in ("verify", "select", "train"):
                gated = _GatedStore(store)
                out[name] = await stage(name, gated)
                assert gated.scans >= 1 and gated.beats == gated.scans, name
        return out

    reports = anyio.run(main)
    assert reports["verify"] == {"verified": 60, "passed": 60}
    assert reports["select"]["selected"] == 30
    assert len(trainer.traces) == 30


# --- the plan counts prompts as the teachers do ------------------------------------------------


def test_plan_prompt_tokens_are_the_teachers_estimate(tmp_path: Path) -> None:
    teacher = SyntheticTeacher()
    problems = synthetic_problems("math", 50, seed=4)
    run = Run(
        name="m",
        task="math",
        teacher=teacher,
        problems=problems,
        train=TrainConfig(base_model="x", batch_size=2),
    )
    row = Experiment(tmp_path, [run], trainer=LocalTrainer()).plan().rows[0]
    expected = sum(teacher.estimate_input_tokens(teacher.request(p)) for p in problems)
    assert row.prompt_tokens == pytest.approx(expected, abs=1)


# --- a corrupt evaluation log is reported, not skipped ------------------------------------------


def _write_log(store: EvalStore, bench: str, n: int, grader: str = "g") -> Path:
    """An evaluation log as written before logs recorded their grader's protocol."""
    header = {
        "label": "base",
        "benchmark": bench,
        "kind": "math",
        "model": "m",
        "benchmark_sha256": "s",
        "grader": grader,
        "request_keys": {f"p{i}": f"k{i}" for i in range(n)},
    }
    with store.open("base", bench, header) as log:
        for i in range(n):
            log.add_sample(f"p{i}", f"k{i}", Completion(text="x", finish_reason=FinishReason.STOP))
            log.add_grade(
                f"p{i}",
                f"k{i}",
                grader=grader,
                passed=i % 2 == 0,
                reason=VerdictReason.PASSED if i % 2 == 0 else VerdictReason.WRONG_ANSWER,
                details={"extraction": "boxed"},
                format={},
                elapsed_s=0.0,
            )
    return store.path_for("base", bench)


def test_a_corrupt_evaluation_log_is_reported_and_the_rest_still_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    problems = synthetic_problems("math", 4, seed=5)
    benches = [custom_benchmark(n, problems, template=DEMO_PROMPTS.math) for n in ("good", "bad")]
    run = Run(
        name="m", task="math", teacher=SyntheticTeacher(), problems=problems,
        train=TrainConfig(base_model="x"),
    )  # fmt: skip
    store = EvalStore(tmp_path)
    # graded by the grader the experiment uses now: the report states its protocol
    _write_log(store, "good", 4, grader=Evaluator.grader_id(benches[0], MathVerifier()))
    bad = _write_log(store, "bad", 4)
    lines = bad.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"type": "grade", "problem_id": \n'  # a corrupt line in the middle
    bad.write_bytes(b"".join(lines))
    before = bad.read_bytes()
    exp = Experiment(tmp_path, [run], trainer=LocalTrainer(), benchmarks=benches, baseline="m")
    with caplog.at_level(logging.WARNING, logger="tracedistill"):
        results = exp.results()
    good = results.base("good")
    assert good is not None and good.accuracy == 0.5  # the rest of the report is there
    assert results.base("bad") is None
    assert [what for what, _ in results.unreadable] == ["base on bad"]
    why = results.unreadable[0][1]
    assert f"{bad}:4" in why  # the file and the line
    assert any(f"{bad}:4" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    text = results.to_markdown()
    assert "Not included" in text and f"{bad}:4" in text
    assert "Not included" in results._repr_html_()
    assert bad.read_bytes() == before  # nothing stored is changed
    # the report states which answers the experiment's grader counts
    assert results.protocols["good"] == MathVerifier().protocol
    assert results.grading_table()[0]["answers that count"] == MathVerifier().protocol
