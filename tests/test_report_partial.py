"""Partial evaluations (some problems never graded) are marked in every table and never chosen
as a best checkpoint or a Pareto point."""

from __future__ import annotations

from pathlib import Path

from tracedistill.evaluation import Completion, EvalStore
from tracedistill.records import FinishReason, VerdictReason
from tracedistill.report import Results, RunInfo


def _log(store: EvalStore, label: str, bench: str, passed: list[bool], graded: int) -> Path:
    """An evaluation of 4 problems whose first ``graded`` are graded (``passed[i]``)."""
    header = {
        "label": label,
        "benchmark": bench,
        "kind": "math",
        "model": label,
        "benchmark_sha256": bench,
        "grader": "g",
        "request_keys": {f"p{i}": f"k{i}" for i in range(4)},
    }
    with store.open(label, bench, header) as log:
        for i in range(graded):
            log.add_sample(f"p{i}", f"k{i}", Completion(text="x", finish_reason=FinishReason.STOP))
            log.add_grade(
                f"p{i}",
                f"k{i}",
                grader="g",
                passed=passed[i],
                reason=VerdictReason.PASSED if passed[i] else VerdictReason.WRONG_ANSWER,
                details={},
                format={},
                elapsed_s=0.0,
            )
    return store.path_for(label, bench)


def test_a_log_cut_to_its_header_is_marked_partial_and_never_chosen(tmp_path: Path) -> None:
    store = EvalStore(tmp_path)
    base_a = _log(store, "base", "A", [True] * 4, 4)
    base_a.write_bytes(base_a.read_bytes().splitlines(keepends=True)[0])  # the header only
    _log(store, "base", "B", [True, False, False, False], 4)
    _log(store, "r@1", "A", [True, True, False, False], 4)
    _log(store, "r@1", "B", [True, True, False, False], 4)
    _log(store, "r@2", "A", [True, True, True, True], 2)  # higher accuracy, half graded
    _log(store, "r@2", "B", [True, True, True, False], 4)
    evaluations = list(store.results())
    cut = next(e for e in evaluations if e.label == "base" and e.benchmark == "A")
    assert (cut.n, cut.expected, cut.complete) == (0, 4, False)
    results = Results.from_evaluations(
        evaluations, [RunInfo(name="r", teacher="t", task="math", in_domain="A")]
    )
    base = results.base("A")
    assert base is not None and not base.complete and base.expected == 4
    assert base.cell() == "not graded (partial 0/4)"
    r2 = results.score("r", 2, "A")
    assert r2 is not None and r2.cell().endswith("(partial 2/4)")
    # the complete step 1 is the best, not the partial step 2 with its 100%
    best = results.best("r", "A")
    assert best is not None and best.step == 1
    rows = {row["run"]: row for row in results.best_in_domain()}
    assert rows["r"]["A step"] == 1
    assert rows["base"]["best A"] == "not graded (partial 0/4)"
    assert "0.0 [0.0, 100.0]" not in results.to_markdown()
    assert [row["recommended step"] for row in results.recommended()] == [1]
    # Pareto: only complete points compete; the partial ones are listed as left out
    pareto = results.pareto("A", "B")
    ranked = [row["model"] for row in pareto if "left out" not in row["model"]]
    assert ranked == ["r@1"]
    left_out = {row["model"]: row["A"] for row in pareto if "left out" in row["model"]}
    assert left_out == {
        "base (left out: partial)": "not graded (partial 0/4)",
        "r@2 (left out: partial)": r2.cell(),
    }
    assert "partial n/N" in results.to_markdown()  # the intro says what the mark means
    # the Pareto plot draws the complete point only (no base star, no partial step 2)
    from tracedistill.report import plots as _plots

    fig = _plots.pareto_figure(results, managed=False)
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["1"], texts


def test_only_partial_checkpoints_leave_no_best() -> None:
    from tracedistill.report import Score

    partial = Score(model="r", benchmark="A", step=1, outcomes={"p0": True}, expected=4)
    results = Results([partial], [RunInfo(name="r", teacher="t", task="math", in_domain="A")])
    assert results.best("r", "A") is None
    row = results.best_in_domain()[0]
    assert row["best A"] == "none complete (step 1 partial 1/4)" and row["A step"] is None
    assert results.cross_domain() == [] and results.recommended() == []


def test_results_are_built_from_the_readable_logs_and_list_the_rest(tmp_path: Path) -> None:
    import pytest

    from tracedistill.errors import StoreCorruptError

    store = EvalStore(tmp_path)
    bad = _log(store, "base", "A", [True] * 4, 4)
    lines = bad.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"type": "grade", \n'  # a corrupt line in the middle
    bad.write_bytes(b"".join(lines))
    _log(store, "base", "B", [True, False, True, False], 4)
    with pytest.raises(StoreCorruptError):
        list(store.results())  # strict by default, as before
    errors: list[tuple[str, str]] = []
    results = Results.from_evaluations(store.results(errors=errors), unreadable=errors)
    good = results.base("B")
    assert good is not None and good.accuracy == 0.5 and results.base("A") is None
    assert [what for what, _ in results.unreadable] == [str(bad)]
    assert f"{bad}:3" in results.unreadable[0][1]  # the file and the line
    assert "Not included" in results.to_markdown()
