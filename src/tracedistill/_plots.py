"""The report's figures: accuracy per step, format compliance per step, the Pareto frontier.

Drawn for a paper: accuracy axes stay within 0-100 %, every accuracy has its 95% interval, the
base model is marked (a dashed line with its interval shaded, or a star), runs that share
steps are drawn side by side so their error bars do not hide each other, legends sit outside
the axes, and point labels are placed where they overlap no other label (checked with the
renderer's text extents; a label that fits nowhere is left out rather than drawn over another).
matplotlib is the optional ``plot`` extra and is imported only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracedistill.report import Results, Score

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
    for model, step in [
        (None, None),
        *[(r, s) for r in results.run_names for s in results.steps(r)],
    ]:
        sx = results.base(x) if model is None else results.score(model, step, x)
        sy = results.base(y) if model is None else results.score(model, step, y)
        if sx is None or sy is None:
            continue
        px, py = 100 * sx.accuracy, 100 * sy.accuracy
        xs += [100 * sx.interval.low, 100 * sx.interval.high]
        ys += [100 * sy.interval.low, 100 * sy.interval.high]
        on = sx.label in frontier
        if on:
            front_pts.append((px, py))
        color = "black" if model is None else colors[model]
        _pareto_point(ax, sx, sy, color=color, base=model is None, on_frontier=on)
        labels.append(("base" if model is None else str(step), px, py, on or model is None))
        label_colors.append(color)
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
    place_labels(ax, [labels[i] for i in order], colors=[label_colors[i] for i in order])
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
        s=140 if base else 46 if on_frontier else 28,
        marker="*" if base else "o",
        color=color,
        edgecolors="black" if on_frontier else "none",
        linewidths=1.0,
        zorder=3,
        clip_on=False,
    )


#: Offsets (in points) tried for a point's label, nearest first.
_OFFSETS = [
    (dx * r, dy * r)
    for r in (1.0, 2.0, 3.2)
    for dx, dy in ((5, 3), (5, -11), (-5, 3), (-5, -11), (0, 7), (0, -15), (9, -4), (-9, -4))
]


def place_labels(
    ax: Any,
    labels: Sequence[tuple[str, float, float, bool]],
    *,
    colors: Sequence[str] | None = None,
) -> list[Any]:
    """Annotate points so that no two labels overlap and none covers another point.

    ``labels`` holds ``(text, x, y, bold)`` in priority order (``colors``: one per label, to
    tie a label to its point's colour). Each label takes the first
    offset where its box overlaps no placed label, no other point and stays inside the axes;
    one that fits nowhere is not drawn. Returns the annotations drawn.
    """
    fig = ax.figure
    canvas = fig.canvas
    if not hasattr(canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    fig.draw_without_rendering()
    box = ax.get_window_extent(renderer)
    marks = [ax.transData.transform((px, py)) for _, px, py, _ in labels]
    taken: list[Any] = []
    drawn: list[Any] = []
    for index, (text, px, py, bold) in enumerate(labels):
        for dx, dy in _OFFSETS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            note = ax.annotate(
                text,
                (px, py),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7,
                fontweight="bold" if bold else "normal",
                color="black" if colors is None else colors[index],
                ha=ha,
                arrowprops=None if abs(dx) < 8 and abs(dy) < 12 else {"arrowstyle": "-", "lw": 0.5},
                annotation_clip=False,
            )
            note.set_in_layout(False)
            extent = note.get_window_extent(renderer).padded(1.5)
            inside = box.contains(extent.x0, extent.y0) and box.contains(extent.x1, extent.y1)
            hits_point = any(
                extent.contains(mx, my) for j, (mx, my) in enumerate(marks) if j != index
            )
            if inside and not hits_point and not any(extent.overlaps(t) for t in taken):
                taken.append(extent)
                drawn.append(note)
                break
            note.remove()
    return drawn


def save(fig: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """Write a figure to ``path`` (its folder created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
