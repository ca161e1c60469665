"""The report's figures, drawn from the study's own 20-checkpoint numbers.

The study's results file (``../shared/study/*.txt`` beside the repository) is parsed into the
report's inputs; the tests are skipped where it is absent. They check what a reader of a paper
would check: no text on top of other text (measured with the renderer), accuracy axes within
0-100, the base model marked, every interval visible, labels not hiding points.
"""

from __future__ import annotations

import math
import random
import re
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from tracedistill.report import BASE, Results, RunInfo, Score

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

STUDY_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "study"
SIZES = {"MATH-500": 500, "MBPP+": 378}
RUN_NAMES = {
    "R1 math": ("r1-math", "r1", "math", "MATH-500"),
    "R1 code": ("r1-code", "r1", "code", "MBPP+"),
    "Sonnet math": ("sonnet-math", "sonnet", "math", "MATH-500"),
    "Sonnet code": ("sonnet-code", "sonnet", "code", "MBPP+"),
}
_ROW = re.compile(
    r"^\|\s*(R1 math|R1 code|Sonnet math|Sonnet code)\s*\|\s*(\d+)\s*\|\s*(\d+)K\s*\|"
    r"\s*([\d.]+)%\s*\|\s*([\d.]+)%\s*\|\s*$"
)
_BASE = re.compile(r"Base model accuracy\*\*: MATH-500 \*\*([\d.]+)%\*\*, MBPP\+ \*\*([\d.]+)%")


def _outcomes(pct: float, n: int, rng: random.Random) -> dict[str, bool]:
    correct = round(pct * n / 100)
    order = list(range(n))
    rng.shuffle(order)  # which problems are solved differs from model to model
    solved = set(order[:correct])
    return {f"p{i}": i in solved for i in range(n)}


def parse_study(text: str) -> Results:
    """The study's checkpoint table and base accuracies as the report's scores."""
    rng = random.Random(0)
    base = _BASE.search(text)
    assert base is not None, "the study file lost its base-model line"
    scores = [
        Score(model=BASE, benchmark=b, outcomes=_outcomes(float(v), SIZES[b], rng))
        for b, v in zip(SIZES, base.groups(), strict=True)
    ]
    for line in text.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        config, step, thousands, math_pct, mbpp_pct = match.groups()
        run = RUN_NAMES[config][0]
        for bench, pct in (("MATH-500", math_pct), ("MBPP+", mbpp_pct)):
            scores.append(
                Score(
                    model=run,
                    step=int(step),
                    samples=int(thousands) * 1000,
                    benchmark=bench,
                    outcomes=_outcomes(float(pct), SIZES[bench], rng),
                )
            )
    runs = [
        RunInfo(name=name, teacher=teacher, task=task, in_domain=bench)
        for name, teacher, task, bench in RUN_NAMES.values()
    ]
    return Results(scores, runs, benchmarks=list(SIZES))


@pytest.fixture(scope="module")
def study() -> Results:
    files = sorted(STUDY_DIR.glob("*.txt")) if STUDY_DIR.is_dir() else []
    if not files:
        pytest.skip(f"the study's results are not at {STUDY_DIR}")
    results = parse_study(files[0].read_text(encoding="utf-8"))
    assert len(results.scores) == 2 + 20 * 2, "expected 20 checkpoints on two benchmarks"
    return results


# --- what the checks measure -------------------------------------------------------------------


def _renderer(fig: Any) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    return canvas.get_renderer()


def _texts(fig: Any) -> list[Any]:
    """Every drawn, non-empty text of the figure (titles, labels, ticks, notes, legends)."""
    hidden = set()
    for ax in fig.axes:  # tick labels outside the axis range exist but are not drawn
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not min(low, high) - 1e-9 <= tick.get_loc() <= max(low, high) + 1e-9:
                    hidden.update({id(tick.label1), id(tick.label2)})
    return [
        t
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip() and id(t) not in hidden
    ]


def overlapping_texts(fig: Any) -> list[tuple[str, str]]:
    renderer = _renderer(fig)
    boxes = []
    for text in _texts(fig):
        extent = text.get_window_extent(renderer)
        if extent.width > 0 and extent.height > 0:
            boxes.append((text.get_text(), extent))
    return [(a, b) for (a, ea), (b, eb) in combinations(boxes, 2) if ea.overlaps(eb)]


def assert_percent_axis(ax: Any, axis: str) -> tuple[float, float]:
    """An accuracy axis: ticks within 0-100, the range beyond it by a small margin at most."""
    low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
    ticks = [t for t in (ax.get_xticks() if axis == "x" else ax.get_yticks()) if low <= t <= high]
    assert ticks and all(0 <= t <= 100 for t in ticks), ticks
    margin = 0.06 * (high - low)
    assert -margin <= low < high <= 100 + margin
    return low, high


def misleading_labels(fig: Any, ax: Any, margin_px: float = 3.0) -> list[str]:
    """Point labels that are not plainly their own point's, with the distances measured.

    A label's distance to a point is from the point's centre to the label's box (display
    pixels); its own point (the one it annotates) must be nearer than every other point by
    ``margin_px``. Points that coincide with its own are not counted (they cannot be told apart).
    """
    renderer = _renderer(fig)
    points = [
        tuple(xy)
        for coll in ax.collections
        if len(coll.get_offsets()) and len(getattr(coll, "get_sizes", list)())
        for xy in ax.transData.transform(coll.get_offsets())
    ]
    wrong = []
    for note in ax.texts:
        box = note.get_window_extent(renderer)
        own = ax.transData.transform(note.xy)

        def gap(x: float, y: float, box: Any = box) -> float:
            return math.hypot(max(box.x0 - x, 0, x - box.x1), max(box.y0 - y, 0, y - box.y1))

        others = [gap(*p) for p in points if math.dist(p, own) > 0.5]
        if others and min(others) < gap(*own) + margin_px:
            wrong.append(f"{note.get_text()}: own {gap(*own):.1f} px, other {min(others):.1f} px")
    return wrong


def _save(fig: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    fig.savefig(path, dpi=110)
    assert path.stat().st_size > 10_000
    return path


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# --- the figures -------------------------------------------------------------------------------


def test_steps_plot_of_the_study(study: Results, tmp_path: Path) -> None:
    fig = study.plot_steps(tmp_path / "new" / "folder" / "steps.png")  # the folder is created
    assert (tmp_path / "new" / "folder" / "steps.png").is_file()
    assert overlapping_texts(fig) == []
    renderer = _renderer(fig)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["MATH-500", "MBPP+"]
    for ax, bench in zip(axes, SIZES, strict=True):
        assert_percent_axis(ax, "y")
        base = study.base(bench)
        assert base is not None
        base_lines = [
            line
            for line in ax.get_lines()
            if line.get_label() == "base model"
            and list(line.get_ydata()) == [100 * base.accuracy] * 2
        ]
        assert len(base_lines) == 1, "the base model is marked at its accuracy"
        # every run's 20 points keep their 95% interval visible: bars at least 4 px tall
        bars = [c for c in ax.containers if c.has_yerr]
        assert len(bars) == 4
        for container in bars:
            (segments,) = container.lines[2]
            for seg in segments.get_segments():
                (_, y0), (_, y1) = ax.transData.transform(seg)
                assert abs(y1 - y0) >= 4
        # runs sharing a step are set side by side, not on top of each other
        xs = {tuple(c.lines[0].get_xdata()) for c in bars}
        assert len(xs) == 4
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(legend) == ["base model", "r1-code", "r1-math", "sonnet-code", "sonnet-math"]
    assert renderer is not None
    _save(fig, tmp_path, "steps-again.png")
    _close(fig)


def test_pareto_plot_of_the_study(study: Results, tmp_path: Path) -> None:
    fig = study.plot_pareto(tmp_path / "pareto.png")
    assert overlapping_texts(fig) == []
    (ax,) = fig.axes
    assert_percent_axis(ax, "x")
    assert_percent_axis(ax, "y")
    notes = {t.get_text() for t in ax.texts}
    assert "base" in notes, "the base model is labelled"
    frontier_steps = {row["model"].split("@")[1] for row in study.pareto() if "@" in row["model"]}
    assert frontier_steps <= notes, "every frontier point is labelled"
    assert len(ax.texts) >= 0.8 * 21, "most points carry their step"
    # no label covers a point
    renderer = _renderer(fig)
    offsets = [ax.transData.transform(xy) for coll in ax.collections for xy in coll.get_offsets()]
    for note in ax.texts:
        extent = note.get_window_extent(renderer)
        covered = [p for p in offsets if extent.contains(*p)]
        assert len(covered) <= 0, f"label {note.get_text()!r} covers a point"
    # every label is plainly its own point's: nearer to it than to any other, by 3 px
    assert misleading_labels(fig, ax) == []
    assert len(ax.texts) >= 19
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "base model" in legend and "sonnet-code" in legend
    _close(fig)


def test_format_plot_axes_are_percentages(study: Results, tmp_path: Path) -> None:
    scores = [
        Score(
            model=s.model,
            benchmark=s.benchmark,
            step=s.step,
            outcomes=s.outcomes,
            format_compliance=0.0 if s.step is None else min(1.0, (s.step or 0) / 400),
        )
        for s in study.scores
    ]
    results = Results(scores, study.runs.values(), benchmarks=study.benchmarks)
    fig = results.plot_format(tmp_path / "format.png")
    assert overlapping_texts(fig) == []
    for ax in fig.axes:
        if ax.get_title():
            low, high = assert_percent_axis(ax, "y")
            assert low < 0 and high > 100, "0% and 100% lie inside the frame"
    _close(fig)


def test_a_flat_run_is_drawn_flat_with_its_interval(tmp_path: Path) -> None:
    """The demo's old code run: 0% everywhere. No ±0.04% axis, the line and bars visible."""
    n = 64
    zero = {f"p{i}": False for i in range(n)}
    scores = [Score(model=BASE, benchmark="code", outcomes=zero)]
    scores += [Score(model="run", benchmark="code", step=s, outcomes=zero) for s in (75, 150)]
    fig = Results(scores).plot_steps()
    (ax,) = [a for a in fig.axes if a.get_title()]
    low, high = assert_percent_axis(ax, "y")
    assert low < 0 and high >= 10
    (bars,) = [c for c in ax.containers if c.has_yerr]
    assert bars.lines[0].get_clip_on() is False  # a line at 0% is never clipped
    (segments,) = bars.lines[2]
    for seg in segments.get_segments():
        (_, y0), (_, y1) = ax.transData.transform(seg)
        assert abs(y1 - y0) >= 10  # the Wilson interval [0, 5.7] shows
    assert overlapping_texts(fig) == []
    _close(fig)


def test_html_report_creates_its_folder_and_embeds_the_plots(
    study: Results, tmp_path: Path
) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = study.to_html(tmp_path / "a" / "b" / "report.html", title="study")
    text = path.read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 2
    assert plt.get_fignums() == before, "writing a report leaves no pyplot figure open"


def _markers(ax: Any) -> list[tuple[float, float, float]]:
    """Every drawn marker of ``ax`` as (x, y, radius) in display pixels."""
    px_per_pt = ax.figure.dpi / 72
    found = []
    for line in ax.get_lines():
        if line.get_marker() in (None, "", "None", " ") or not line.get_visible():
            continue
        radius = line.get_markersize() / 2 * px_per_pt
        for x, y in ax.transData.transform(line.get_xydata()):
            found.append((x, y, radius))
    for coll in ax.collections:
        offsets = coll.get_offsets()
        sizes = coll.get_sizes() if hasattr(coll, "get_sizes") else []
        if len(offsets) == 0 or len(sizes) == 0:
            continue  # legend-only scatters and error-bar segments carry no marker
        for i, xy in enumerate(ax.transData.transform(offsets)):
            radius = float(sizes[i % len(sizes)]) ** 0.5 / 2 * px_per_pt
            found.append((float(xy[0]), float(xy[1]), radius))
    return found


def _extremes() -> Results:
    """A demo-size result: accuracies of 0% and 100%, the base model at 0% on both tasks."""
    n = 40
    none = {f"p{i}": False for i in range(n)}
    every = {f"p{i}": True for i in range(n)}
    half = {f"p{i}": i < n // 2 for i in range(n)}
    scores = [
        Score(model=BASE, benchmark=b, outcomes=none, format_compliance=0.0)
        for b in ("math", "code")
    ]
    for run, (m, c) in {"math-run": (every, none), "code-run": (half, every)}.items():
        for step in (50, 100):
            complied = 1.0 if step == 100 else 0.0
            scores += [
                Score(
                    model=run, step=step, benchmark="math", outcomes=m, format_compliance=complied
                ),
                Score(
                    model=run, step=step, benchmark="code", outcomes=c, format_compliance=complied
                ),
            ]
    return Results(scores, benchmarks=["math", "code"])


@pytest.mark.parametrize("kind", ["steps", "format", "pareto"])
def test_points_at_0_and_100_percent_are_drawn_whole_inside_the_frame(
    kind: str, tmp_path: Path
) -> None:
    results = _extremes()
    fig = getattr(results, f"plot_{kind}")(tmp_path / f"{kind}.png")
    _renderer(fig)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert axes
    for ax in axes:
        frame = ax.bbox
        markers = _markers(ax)
        assert markers
        for x, y, radius in markers:
            assert frame.x0 + radius <= x <= frame.x1 - radius, (kind, x, radius, frame)
            assert frame.y0 + radius <= y <= frame.y1 - radius, (kind, y, radius, frame)
        for axis in ("x", "y") if kind == "pareto" else ("y",):
            assert_percent_axis(ax, axis)
        base = [line for line in ax.get_lines() if line.get_label() == "base model"]
        assert misleading_labels(fig, ax) == []
        if kind == "pareto":  # a run's steps 50 and 100 score alike: one point, one label
            assert sorted(t.get_text() for t in ax.texts) == ["50, 100", "50, 100", "base"]
        else:  # the base line at 0% is drawn clear of the x axis
            ((_, y),) = {tuple(ax.transData.transform((0, line.get_ydata()[0]))) for line in base}
            assert y - frame.y0 >= 6, "the base model's line is hidden under the x axis"
    assert overlapping_texts(fig) == []
    _close(fig)
