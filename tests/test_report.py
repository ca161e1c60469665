"""The report's tables against hand-computed values on the study's own numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracedistill.evaluation.stats import mcnemar_exact
from tracedistill.report import BASE, Results, RunInfo, Score, compare

N = 1000  # problems per benchmark, so the study's percentages are exact counts

# (run, step) -> (MATH-500 %, MBPP+ %), from shared/study (the full checkpoint table)
STUDY = {
    ("r1-math", 100): (58, 10), ("r1-math", 200): (72, 31), ("r1-math", 300): (65, 41),
    ("r1-math", 400): (65, 48), ("r1-math", 500): (67, 44),
    ("r1-code", 100): (66, 15), ("r1-code", 200): (73, 43), ("r1-code", 300): (75, 48),
    ("r1-code", 400): (74, 56), ("r1-code", 500): (75, 49),
    ("sonnet-math", 100): (85, 65), ("sonnet-math", 200): (82, 62), ("sonnet-math", 300): (88, 57),
    ("sonnet-math", 400): (85, 63), ("sonnet-math", 500): (86, 62),
    ("sonnet-code", 100): (82, 69), ("sonnet-code", 200): (79, 74), ("sonnet-code", 300): (77, 74),
    ("sonnet-code", 400): (84, 71), ("sonnet-code", 500): (79, 73),
}  # fmt: skip
BASE_PCT = (80.6, 75.7)
RUNS = [
    RunInfo(name="r1-math", teacher="r1", task="math", in_domain="MATH-500"),
    RunInfo(name="r1-code", teacher="r1", task="code", in_domain="MBPP+"),
    RunInfo(name="sonnet-math", teacher="sonnet", task="math", in_domain="MATH-500"),
    RunInfo(name="sonnet-code", teacher="sonnet", task="code", in_domain="MBPP+"),
]


def outcomes(pct: float) -> dict[str, bool]:
    k = round(pct * N / 100)
    return {f"p{i}": i < k for i in range(N)}


@pytest.fixture(scope="module")
def results() -> Results:
    scores = [
        Score(model=BASE, benchmark="MATH-500", outcomes=outcomes(BASE_PCT[0])),
        Score(model=BASE, benchmark="MBPP+", outcomes=outcomes(BASE_PCT[1])),
    ]
    for (run, step), (math, mbpp) in STUDY.items():
        scores.append(
            Score(
                model=run,
                step=step,
                samples=step * 50,
                benchmark="MATH-500",
                outcomes=outcomes(math),
            )
        )
        scores.append(
            Score(
                model=run, step=step, samples=step * 50, benchmark="MBPP+", outcomes=outcomes(mbpp)
            )
        )
    return Results(scores, RUNS)


def test_best_in_domain_matches_the_study(results: Results) -> None:
    table = {r["run"]: r for r in results.best_in_domain()}
    expected = {  # the study's "Best In-Domain Performance" table
        "r1-math": (72, 200, 48, 400),
        "r1-code": (75, 300, 56, 400),
        "sonnet-math": (88, 300, 65, 100),
        "sonnet-code": (84, 400, 74, 200),
    }
    for run, (math, math_step, mbpp, mbpp_step) in expected.items():
        assert table[run]["MATH-500 step"] == math_step
        assert table[run]["MBPP+ step"] == mbpp_step
        assert table[run]["best MATH-500"].startswith(f"{math:.1f} [")
        assert table[run]["best MBPP+"].startswith(f"{mbpp:.1f} [")
    assert table[BASE]["best MATH-500"].startswith("80.6 [")


def test_cross_domain_at_best_in_domain(results: Results) -> None:
    rows = {r["run"]: r for r in results.cross_domain()}
    # the study's "Cross-Domain Transfer" table
    assert rows["r1-math"]["best in-domain"] == "MATH-500 @ step 200"
    assert rows["r1-math"]["MBPP+ (cross-domain)"].startswith("31.0")
    assert rows["r1-code"]["best in-domain"] == "MBPP+ @ step 400"
    assert rows["r1-code"]["MATH-500 (cross-domain)"].startswith("74.0")
    assert rows["sonnet-math"]["MBPP+ (cross-domain)"].startswith("57.0")
    assert rows["sonnet-code"]["best in-domain"] == "MBPP+ @ step 200"
    assert rows["sonnet-code"]["MATH-500 (cross-domain)"].startswith("79.0")


def test_delta_from_base_is_paired_and_marks_significance(results: Results) -> None:
    rows = {r["run"]: r for r in results.delta_from_base()}
    # study: Sonnet math +7.4pp MATH, Sonnet code -1.7pp MBPP+, R1 math -8.6 / -27.7
    assert rows["sonnet-math"]["best MATH-500 vs base"].startswith("+7.4*")
    # Nested outcomes: all 17 discordant problems go one way, so even -1.7 is significant.
    assert rows["sonnet-code"]["best MBPP+ vs base"].startswith("-1.7*")
    assert rows["r1-math"]["best MATH-500 vs base"].startswith("-8.6*")
    assert rows["r1-math"]["best MBPP+ vs base"].startswith("-27.7*")
    # With nested outcomes, the discordant problems are exactly the difference in counts.
    base = results.base("MBPP+")
    best = results.best("sonnet-code", "MBPP+")
    assert base is not None and best is not None
    comparison = compare(base, best)
    assert comparison.p_value == pytest.approx(mcnemar_exact(17, 0))
    assert comparison.interval.contains(-0.017)


def test_head_to_head(results: Results) -> None:
    rows = results.head_to_head()
    math_rows = [r for r in rows if r["task"] == "math"]
    assert math_rows[0]["metric"] == "best MATH-500"
    assert math_rows[0]["second - first"].startswith("+16.0*")  # study: +16pp
    assert math_rows[1]["metric"] == "MBPP+ at best MATH-500"
    assert math_rows[1]["second - first"].startswith("+26.0*")  # study: +26pp
    code_rows = [r for r in rows if r["task"] == "code"]
    assert code_rows[0]["second - first"].startswith("+18.0*")  # study: +18pp
    assert code_rows[1]["second - first"].startswith("+5.0*")  # study: +5pp


def test_pareto_frontier(results: Results) -> None:
    frontier = [r["model"] for r in results.pareto()]
    # hand-computed over (MATH, MBPP+): nothing beats these on both axes
    assert frontier == [
        "sonnet-math@300",
        "sonnet-math@500",
        "sonnet-math@100",
        "sonnet-code@400",
        "base",
    ]


def test_recommended_checkpoint(results: Results) -> None:
    rows = {r["run"]: r for r in results.recommended()}
    # the study's recommendations are the best in-domain checkpoints
    assert rows["r1-math"]["recommended step"] == 200
    assert rows["r1-code"]["recommended step"] == 400
    assert rows["sonnet-math"]["recommended step"] == 300
    assert rows["sonnet-code"]["recommended step"] == 200
    # Steps 400 and 500 are significantly below 74% MBPP+ here (30 and 10 discordant problems,
    # all one way), so the only tie is step 300 (74%), whose MATH (77%) is lower than 79%.
    assert rows["sonnet-code"]["balanced alternative"] is None


def test_per_step_and_outputs(results: Results, tmp_path: Path) -> None:
    rows = results.per_step("sonnet-math")
    assert [r["step"] for r in rows] == [100, 200, 300, 400, 500, "base"]
    assert rows[0]["samples"] == 5000
    md = results.to_markdown()
    assert "## Run sonnet-math: per step" in md and "## Pareto frontier" in md
    frames = results.dataframes()
    assert frames["Best in-domain"].shape[0] == 5
    assert "<table>" in results._repr_html_()
    pytest.importorskip("matplotlib")
    out = results.to_html(tmp_path / "report.html", title="study")
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 2 and "Pareto frontier" in text


def test_duplicate_scores_are_rejected() -> None:
    s = Score(model="a", step=1, benchmark="b", outcomes={"x": True})
    with pytest.raises(ValueError, match="two scores"):
        Results([s, s])


def test_balanced_alternative_when_in_domain_difference_is_noise() -> None:
    # Two checkpoints 1 point apart in-domain on 200 problems with mixed disagreements: not
    # significant, and the later one is much better cross-domain.
    def mixed(k: int, shift: int) -> dict[str, bool]:
        return {f"p{i}": (i + shift) % 200 < k for i in range(200)}

    scores = [
        Score(model="run", step=1, benchmark="A", outcomes=mixed(150, 0)),
        Score(model="run", step=2, benchmark="A", outcomes=mixed(148, 7)),
        Score(model="run", step=1, benchmark="B", outcomes=mixed(50, 0)),
        Score(model="run", step=2, benchmark="B", outcomes=mixed(120, 0)),
    ]
    res = Results(scores, [RunInfo(name="run", teacher="t", task="a", in_domain="A")])
    row = res.recommended()[0]
    assert row["recommended step"] == 1
    assert row["balanced alternative"].startswith("step 2: A 74.0")
