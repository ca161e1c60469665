"""The report's figures: accuracy per step, format compliance per step, the Pareto frontier.

Drawn for a paper: accuracy ticks stay within 0-100 % (an axis that reaches 0 or 100 gets a
small margin, so points and the base line there are not hidden by the frame), every accuracy
has its 95% interval, the base model is marked (a dashed line with its interval shaded, or a
star), runs that share steps are drawn side by side so their error bars do not hide each other,
legends sit outside the axes, and each point label sits nearer its own point than any other,
overlapping no label and no marker (measured with the renderer's text extents; a label that
fits nowhere is left out rather than drawn where it could be read as another point's).
matplotlib is the optional ``plot`` extra and is imported only here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracedistill.report.results import Results
    from tracedistill.report.scores import Score

__all__ = ["format_figure", "pareto_figure", "save", "steps_figure"]

BASE_COLOR = "0.35"
#: One marker shape per run, so runs stay apart where their lines coincide (and in greyscale).
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
#: Smallest span of an accuracy axis, in points: a flat line is shown as flat, not magnified.
MIN_SPAN = 20.0
#: Room left beyond 0% and 100% (a fraction of the axis span), so that markers and lines there
#: are drawn whole and apart from the frame; the ticks stay within 0-100.
EDGE = 0.045


def _figure(size: tuple[float, float], cols: int, managed: bool) -> tuple[Any, list[Any]]:
    """A figure with ``cols`` axes; ``managed`` figures belong to pyplot (shown inline)."""
    if managed:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=size)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=size)
    axes = [fig.add_subplot(1, cols, i + 1) for i in range(cols)]
    return fig, axes


def _limits(values: Sequence[float], pad: float = 4.0) -> tuple[float, float]:
    """An axis range within 0-100 covering ``values`` (intervals included), at least MIN_SPAN."""
    if not values:
        return 0.0, 100.0
    low, high = min(values) - pad, max(values) + pad
    if high - low < MIN_SPAN:
        middle = (low + high) / 2
        low, high = middle - MIN_SPAN / 2, middle + MIN_SPAN / 2
    if low < 0:
        low, high = 0.0, min(100.0, high - low)
    if high > 100:
        low, high = max(0.0, low - (high - 100)), 100.0
    return low, high


def _percent_axis(ax: Any, axis: str, low: float, high: float) -> None:
    """Show ``low``-``high`` (within 0-100) on ``ax``'s ``axis`` ("x" or "y").

    An end at 0 or 100 gets a margin of EDGE of the span, so a point or the base line there is
    not hidden under the frame; ticks outside 0-100 are dropped.
    """
    margin = EDGE * (high - low)
    shown = (low - margin if low <= 0 else low, high + margin if high >= 100 else high)
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xlim if axis == "x" else ax.set_ylim)(*shown)
    ticks = target.get_major_locator().tick_values(*shown)
    # set_ticks widens the view to every tick: keep only those shown and within 0-100
    within = (max(0.0, shown[0]) - 1e-9, min(100.0, shown[1]) + 1e-9)
    target.set_ticks([t for t in ticks if within[0] <= t <= within[1]])


def _dodge(results: Results, runs: Sequence[str]) -> dict[str, float]:
    """Horizontal offsets that set runs sharing steps side by side (2% of the step range)."""
    steps = sorted({st for r in runs for st in results.steps(r)})
    width = 0.02 * (steps[-1] - steps[0]) if len(steps) > 1 else 0.5
    return {r: (i - (len(runs) - 1) / 2) * width for i, r in enumerate(runs)}


def _legend(fig: Any, axes: Sequence[Any]) -> None:
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=min(len(handles), 5),
            fontsize=8,
            frameon=False,
        )


def _base_line(ax: Any, base: Score | None) -> list[float]:
    if base is None:
        return []
    acc = 100 * base.accuracy
    low, high = 100 * base.interval.low, 100 * base.interval.high
    ax.axhspan(low, high, color=BASE_COLOR, alpha=0.12, linewidth=0)
    ax.axhline(acc, color=BASE_COLOR, linestyle="--", linewidth=1.2, label="base model")
    return [low, high]


def steps_figure(results: Results, *, managed: bool = True) -> Any:
    """Accuracy against step per benchmark, one line per run, 95% error bars, base dashed."""
    cols = max(1, len(results.benchmarks))
    fig, axes = _figure((5.0 * cols, 4.2), cols, managed)
    fig.set_layout_engine("constrained")
    runs = results.run_names
    dodge = _dodge(results, runs)
    for ax, bench in zip(axes, results.benchmarks, strict=False):
        seen: list[float] = []
        for i, run in enumerate(runs):
            pts = [s for st in results.steps(run) if (s := results.score(run, st, bench))]
            if not pts:
                continue
            ys = [100 * s.accuracy for s in pts]
            lows = [100 * s.interval.low for s in pts]
            highs = [100 * s.interval.high for s in pts]
            seen += lows + highs
            ax.errorbar(
                [(s.step or 0) + dodge[run] for s in pts],
                ys,
                yerr=[
                    [y - lo for y, lo in zip(ys, lows, strict=True)],
                    [hi - y for y, hi in zip(ys, highs, strict=True)],
                ],
                marker=_MARKERS[i % len(_MARKERS)],
                markersize=4,
                capsize=3,
                linewidth=1.4,
                color=f"C{i}",
                label=run,
                clip_on=False,
                zorder=3,
            )
        seen += _base_line(ax, results.base(bench))
        _percent_axis(ax, "y", *_limits(seen))
        ax.set_title(bench)
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy (%, 95% interval)")
        ax.grid(alpha=0.25)
    _legend(fig, axes)
    return fig


def format_figure(results: Results, *, managed: bool = True) -> Any:
    """Format compliance against step per benchmark, one line per run, base dashed."""
    cols = max(1, len(results.benchmarks))
    fig, axes = _figure((5.0 * cols, 3.8), cols, managed)
    fig.set_layout_engine("constrained")
    dodge = _dodge(results, results.run_names)
    for ax, bench in zip(axes, results.benchmarks, strict=False):
        for i, run in enumerate(results.run_names):
            pts = [
                s
                for st in results.steps(run)
                if (s := results.score(run, st, bench)) is not None
                and s.format_compliance is not None
            ]
            if pts:
                ax.plot(
                    [(s.step or 0) + dodge[run] for s in pts],
                    [100 * (s.format_compliance or 0.0) for s in pts],
                    marker=_MARKERS[i % len(_MARKERS)],
                    markersize=4,
                    color=f"C{i}",
                    label=run,
                    clip_on=False,
                    zorder=3,
                )
        base = results.base(bench)
        if base is not None and base.format_compliance is not None:
            ax.axhline(
                100 * base.format_compliance,
                color=BASE_COLOR,
                linestyle="--",
                label="base model",
            )
        _percent_axis(ax, "y", 0.0, 100.0)
        ax.set_title(f"{bench}: format compliance")
        ax.set_xlabel("training step")
        ax.set_ylabel("responses in the trained format (%)")
        ax.grid(alpha=0.25)
    _legend(fig, axes)
    return fig


def pareto_figure(results: Results, *, managed: bool = True) -> Any:
    """Every checkpoint (and the base model) over the first two benchmarks.

    Points are coloured by run with their step as label, the base model is a star, faint bars
    show each point's 95% intervals, and the frontier is a dashed line through its points.
    Partial scores (an evaluation that did not grade every problem) are not drawn.
    """
    fig, (ax,) = _figure((6.4, 5.6), 1, managed)
    if len(results.benchmarks) < 2:
        ax.set_title("Pareto frontier: needs two benchmarks")
        return fig
    x, y = results.benchmarks[0], results.benchmarks[1]
    frontier = {row["model"] for row in results.pareto(x, y)}
    colors = {run: f"C{i}" for i, run in enumerate(results.run_names)}
    labels: list[tuple[str, float, float, bool]] = []
    xs: list[float] = []
    ys: list[float] = []
    front_pts: list[tuple[float, float]] = []
    label_colors: list[str] = []
    radii: list[float] = []
    for model, step in [
        (None, None),
        *[(r, s) for r in results.run_names for s in results.steps(r)],
    ]:
        sx = results.base(x) if model is None else results.score(model, step, x)
        sy = results.base(y) if model is None else results.score(model, step, y)
        if sx is None or sy is None or not (sx.complete and sy.complete):
            continue  # a partial score is no point: the Pareto table lists it as left out
        px, py = 100 * sx.accuracy, 100 * sy.accuracy
        xs += [100 * sx.interval.low, 100 * sx.interval.high]
        ys += [100 * sy.interval.low, 100 * sy.interval.high]
        on = sx.label in frontier
        if on:
            front_pts.append((px, py))
        color = "black" if model is None else colors[model]
        _pareto_point(ax, sx, sy, color=color, base=model is None, on_frontier=on)
        same = [i for i, (_, lx, ly, _) in enumerate(labels) if (lx, ly) == (px, py)]
        if model is not None and same and label_colors[same[0]] == color:
            # a run's checkpoints with equal scores share one point: one label names them all
            text, _, _, bold = labels[same[0]]
            labels[same[0]] = (f"{text}, {step}", px, py, bold or on)
            radii[same[0]] = max(radii[same[0]], _marker_area(False, on) ** 0.5 / 2 + 0.5)
            continue
        labels.append(("base" if model is None else str(step), px, py, on or model is None))
        label_colors.append(color)
        radii.append(_marker_area(model is None, on) ** 0.5 / 2 + (0.5 if on else 0.0))
    front_pts.sort()
    if front_pts:
        ax.plot(
            [p[0] for p in front_pts],
            [p[1] for p in front_pts],
            color="black",
            linestyle=":",
            linewidth=1.2,
            zorder=2,
            label="Pareto frontier (outlined)",
        )
    for run, color in colors.items():  # legend entries: plain markers, whatever the points
        ax.scatter([], [], s=28, color=color, label=run)
    ax.scatter([], [], marker="*", s=140, color="black", label="base model")
    _percent_axis(ax, "x", *_limits(xs, pad=2.0))
    _percent_axis(ax, "y", *_limits(ys, pad=2.0))
    ax.set_xlabel(f"{x} accuracy (%)")
    ax.set_ylabel(f"{y} accuracy (%)")
    ax.set_title(f"{x} vs {y}: every checkpoint (label = step)")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    order = sorted(range(len(labels)), key=lambda i: not labels[i][3])
    place_labels(
        ax,
        [labels[i] for i in order],
        colors=[label_colors[i] for i in order],
        radii=[radii[i] for i in order],
    )
    return fig


def _pareto_point(
    ax: Any, sx: Score, sy: Score, *, color: str, base: bool, on_frontier: bool
) -> None:
    """One model's point with faint 95% interval bars (a star for the base model)."""
    px, py = 100 * sx.accuracy, 100 * sy.accuracy
    ax.errorbar(
        px,
        py,
        xerr=[[px - 100 * sx.interval.low], [100 * sx.interval.high - px]],
        yerr=[[py - 100 * sy.interval.low], [100 * sy.interval.high - py]],
        color=color,
        alpha=0.18,
        linewidth=1,
        zorder=1,
        clip_on=False,
    )
    ax.scatter(
        px,
        py,
        s=_marker_area(base, on_frontier),
        marker="*" if base else "o",
        color=color,
        edgecolors="black" if on_frontier else "none",
        linewidths=1.0,
        zorder=3,
        clip_on=False,
    )


def _marker_area(base: bool, on_frontier: bool) -> float:
    """A Pareto point's marker area (points squared): the base a star, the frontier larger."""
    return 140.0 if base else 46.0 if on_frontier else 28.0


#: Directions tried for a point's label (degrees from the right, counter-clockwise), in order
#: of preference: up-right first, as a reader expects.
_ANGLES = (30, -30, 150, -150, 90, -90, 0, 180, 60, -60, 120, -120)
#: Gaps (points) left between a point's marker and its label, tried from the smallest; a label
#: set at the widest gap gets a leader line to its point.
_GAPS = (1.5, 4.0, 8.0)
#: How much nearer (points) a label must be to its own point than to any other point.
CLEARANCE = 3.0


_Box = tuple[float, float, float, float]


def _gap_to(box: _Box, x: float, y: float) -> float:
    """Distance (pixels) from a point to a box ``(x0, y0, x1, y1)``; 0 inside it."""
    x0, y0, x1, y1 = box
    return float(math.hypot(max(x0 - x, 0.0, x - x1), max(y0 - y, 0.0, y - y1)))


def _candidates(
    x: float, y: float, size: tuple[float, float], reach: float
) -> list[tuple[_Box, str, str, float, float]]:
    """Boxes for a ``size`` label at ``reach`` pixels from ``(x, y)``, one per direction.

    Each is ``(box, ha, va, dx, dy)``: the text's alignment and its anchor's pixel offset.
    """
    width, height = size
    found = []
    for angle in _ANGLES:
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        dx, dy = reach * cos, reach * sin
        ha = "left" if cos > 0.35 else "right" if cos < -0.35 else "center"
        va = "bottom" if sin > 0.35 else "top" if sin < -0.35 else "center"
        x0 = x + dx - {"left": 0.0, "center": width / 2, "right": width}[ha]
        y0 = y + dy - {"bottom": 0.0, "center": height / 2, "top": height}[va]
        found.append(((x0, y0, x0 + width, y0 + height), ha, va, dx, dy))
    return found


def place_labels(
    ax: Any,
    labels: Sequence[tuple[str, float, float, bool]],
    *,
    colors: Sequence[str] | None = None,
    radii: Sequence[float] | None = None,
) -> list[Any]:
    """Label points so that each label is plainly its own point's and overlaps nothing.

    ``labels`` holds ``(text, x, y, bold)`` in priority order, ``colors`` one colour per label
    (tying a label to its point's colour) and ``radii`` each point's marker radius in points.
    A label goes as close to its point as it can while it stays inside the axes, overlaps no
    placed label and no marker, and is at least CLEARANCE nearer its own point than any other;
    a label that fits nowhere is left out rather than drawn where it could be misread.
    Returns the annotations drawn.
    """
    fig = ax.figure
    canvas = fig.canvas
    if not hasattr(canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    fig.draw_without_rendering()
    px_per_pt = fig.dpi / 72
    frame = ax.get_window_extent(renderer)
    marks = [tuple(ax.transData.transform((px, py))) for _, px, py, _ in labels]
    sizes = [px_per_pt * (3.0 if radii is None else r) for r in (radii or [0.0] * len(labels))]
    taken: list[_Box] = []
    drawn: list[Any] = []
    for index, (text, px, py, bold) in enumerate(labels):
        style = {"fontsize": 7, "fontweight": "bold" if bold else "normal"}
        color = "black" if colors is None else colors[index]
        probe = ax.text(0, 0, text, **style)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        size = (extent.width + 2, extent.height + 2)
        found = _best_spot(index, marks, sizes, size, frame, taken, px_per_pt)
        if found is None:
            continue
        box, ha, va, dx, dy, far = found
        note = ax.annotate(
            text,
            (px, py),
            xytext=(dx / px_per_pt, dy / px_per_pt),
            textcoords="offset points",
            ha=ha,
            va=va,
            color=color,
            arrowprops=(
                {"arrowstyle": "-", "lw": 0.5, "color": color, "shrinkA": 0, "shrinkB": 0}
                if far
                else None
            ),
            annotation_clip=False,
            **style,
        )
        note.set_in_layout(False)
        taken.append(box)
        drawn.append(note)
    return drawn


def _best_spot(
    index: int,
    marks: Sequence[tuple[float, float]],
    sizes: Sequence[float],
    size: tuple[float, float],
    frame: Any,
    taken: Sequence[_Box],
    px_per_pt: float,
) -> tuple[_Box, str, str, float, float, bool] | None:
    """The nearest acceptable box for label ``index`` (see place_labels), or None.

    Among the acceptable boxes at the smallest gap, the one that sets its label furthest
    apart from other points wins (up to a point: beyond 3 CLEARANCE, direction order decides).
    """
    x, y = marks[index]
    clearance = CLEARANCE * px_per_pt
    for step, gap in enumerate(_GAPS):
        best = None
        best_margin = -math.inf
        for box, ha, va, dx, dy in _candidates(x, y, size, sizes[index] + gap * px_per_pt):
            if not (frame.x0 <= box[0] and box[2] <= frame.x1):
                continue
            if not (frame.y0 <= box[1] and box[3] <= frame.y1):
                continue
            if any(_overlaps(box, other) for other in taken):
                continue
            own = _gap_to(box, x, y)
            others = [
                _gap_to(box, mx, my)
                for j, (mx, my) in enumerate(marks)
                if j != index and math.hypot(mx - x, my - y) > 0.5
            ]
            if any(_gap_to(box, mx, my) < r for (mx, my), r in zip(marks, sizes, strict=True)):
                continue
            margin = min(min(others, default=math.inf) - own, 3 * clearance)
            if margin >= clearance and margin > best_margin:
                best, best_margin = (box, ha, va, dx, dy, step == len(_GAPS) - 1), margin
        if best is not None:
            return best
    return None


def _overlaps(a: _Box, b: _Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def save(fig: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """Write a figure to ``path`` (its folder created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
