from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from tracedistill.errors import EvaluationError
from tracedistill.evaluation.stats import (
    PairedCounts,
    mcnemar_exact,
    paired_counts,
    paired_difference,
    wilson_interval,
    z_value,
)


@pytest.mark.parametrize(
    ("k", "n"),
    [
        (0, 10),
        (1, 10),
        (5, 10),
        (10, 10),
        (403, 500),
        (286, 378),
        (440, 500),
        (1, 1),
        (0, 1),
        (250, 500),
    ],
)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy(k: int, n: int, confidence: float) -> None:
    ours = wilson_interval(k, n, confidence)
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert ours.low == pytest.approx(ref.low, abs=1e-12)
    assert ours.high == pytest.approx(ref.high, abs=1e-12)


def test_wilson_edge_cases() -> None:
    assert wilson_interval(0, 0).low == 0.0 and wilson_interval(0, 0).high == 1.0
    with pytest.raises(EvaluationError):
        wilson_interval(5, 4)
    with pytest.raises(EvaluationError):
        z_value(1.0)
    # MATH-500 near 85%: the interval is about +-3.1 points (standard error ~1.6).
    iv = wilson_interval(425, 500)
    assert 0.055 < iv.width < 0.065


@pytest.mark.parametrize(
    ("b", "c"),
    [(0, 0), (0, 1), (1, 0), (3, 9), (9, 3), (10, 10), (0, 25), (40, 61), (120, 90), (700, 650)],
)
def test_mcnemar_matches_scipy(b: int, c: int) -> None:
    ours = mcnemar_exact(b, c)
    ref = 1.0 if b + c == 0 else sps.binomtest(b, b + c, 0.5).pvalue
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_paired_counts_and_difference_sign() -> None:
    first = [True, True, False, False, True, False]
    second = [True, False, True, True, True, False]
    counts = paired_counts(first, second)
    assert counts == PairedCounts(both=2, only_first=1, only_second=2, neither=1)
    diff, iv = paired_difference(counts)
    assert diff == pytest.approx((4 - 3) / 6)
    assert iv.low < diff < iv.high
    with pytest.raises(EvaluationError):
        paired_counts([True], [True, False])


def test_paired_interval_narrower_than_unpaired_when_correlated() -> None:
    # Two checkpoints that agree on most of 500 problems: pairing must pay off.
    counts = PairedCounts(both=400, only_first=10, only_second=30, neither=60)
    diff, iv = paired_difference(counts)
    assert diff == pytest.approx(20 / 500)
    a = wilson_interval(410, 500)
    b = wilson_interval(430, 500)
    unpaired_half = math.hypot((a.high - a.low) / 2, (b.high - b.low) / 2)
    assert (iv.high - iv.low) / 2 < 0.6 * unpaired_half
    assert iv.low > 0  # significant, as McNemar says
    assert mcnemar_exact(10, 30) < 0.01


def test_paired_interval_coverage_by_simulation() -> None:
    # Independent check of Newcombe's interval: its coverage of the true difference.
    rng = random.Random(0)
    n, trials, covered = 200, 1500, 0
    # True cell probabilities of (both, only first, only second, neither).
    cells = (0.70, 0.05, 0.10, 0.15)
    true_diff = cells[2] - cells[1]
    for _ in range(trials):
        draws = rng.choices(range(4), weights=cells, k=n)
        counts = PairedCounts(*(draws.count(i) for i in range(4)))
        _, iv = paired_difference(counts)
        covered += iv.low <= true_diff <= iv.high
    assert 0.93 <= covered / trials <= 0.975


@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 300), st.integers(0, 300))
def test_paired_interval_properties(a: int, b: int, c: int, d: int) -> None:
    counts = PairedCounts(a, b, c, d)
    diff, iv = paired_difference(counts)
    assert -1.0 <= iv.low <= iv.high <= 1.0
    if counts.n:
        assert iv.low <= diff + 1e-12 and diff - 1e-12 <= iv.high
        # Swapping the models mirrors the interval.
        diff2, iv2 = paired_difference(PairedCounts(a, c, b, d))
        assert diff2 == pytest.approx(-diff)
        assert iv2.low == pytest.approx(-iv.high) and iv2.high == pytest.approx(-iv.low)
