"""The study's results: tables with intervals and paired tests, plots, and an HTML report.

:class:`Results` holds one :class:`Score` per (model or checkpoint, benchmark) and computes the
tables of the study: per run and step, the best in-domain checkpoint, the cross-domain score at
that checkpoint, the delta from the base model, the teacher head-to-head, the recommended
checkpoint per run and the Pareto frontier over the benchmarks. Every accuracy carries its 95%
Wilson interval; every difference is paired problem by problem (exact McNemar test and
Newcombe's interval), so a reader sees which differences are more than noise.
"""

from __future__ import annotations

import base64
import collections
import html
import io
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracedistill._html import table_html, table_markdown
from tracedistill.report.quality import TraceQuality
from tracedistill.report.scores import ALPHA, BASE, RunInfo, Score, compare, parse_label
from tracedistill.verifiers.compliance import (
    COMPLIANCE_RULE,
    COMPLIANT_EXTRACTIONS,
    EXTRACTION_WORDS,
)

if TYPE_CHECKING:
    from tracedistill.evaluation.results import EvalResult

__all__ = ["Results"]

_INTRO = (
    "Accuracies in percent with 95% Wilson intervals; differences in points with "
    "Newcombe paired intervals, * where the exact McNemar test gives p < 0.05. A score marked "
    "'partial n/N' covers only n of the benchmark's N problems (an unfinished or failed "
    "evaluation): it is never chosen as a best or recommended checkpoint nor as a Pareto point."
)


def _off_format(score: Score) -> str:
    """How many passed answers an extraction outside the trained format found."""
    if not score.extractions:
        return "—"
    return f"{sum(v for k, v in score.extractions.items() if k not in COMPLIANT_EXTRACTIONS):,}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


class Results:
    """The scores of a study and every table derived from them.

    Args:
        scores: one Score per (model or checkpoint, benchmark); base-model scores use
            ``model=BASE`` and ``step=None``.
        runs: what each run is (teacher, task, in-domain benchmark); runs without an entry are
            shown with their name only and have no in-domain tables.
        benchmarks: the benchmark order of the tables (default: order of first appearance).
        quality: trace-quality rows per teacher and task.
        protocols: per benchmark, which answers its grader counts, in words (e.g. a
            ``MathVerifier``'s ``protocol``), for scores that do not record it; the protocols
            the scores record win. Shown in the grading-protocol table.
        unreadable: ``(what, why)`` for each stored evaluation that could not be read (a
            corrupt log); the text and HTML forms list them above the tables.
    """

    def __init__(
        self,
        scores: Iterable[Score],
        runs: Iterable[RunInfo] = (),
        *,
        benchmarks: Sequence[str] | None = None,
        quality: Iterable[TraceQuality] = (),
        protocols: Mapping[str, str] | None = None,
        unreadable: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.scores = list(scores)
        self.protocols = _protocols(self.scores, protocols or {})
        self.unreadable = [(str(what), str(why)) for what, why in unreadable]
        self.runs = {r.name: r for r in runs}
        seen: list[str] = []
        for s in self.scores:
            if s.benchmark not in seen:
                seen.append(s.benchmark)
        self.benchmarks = list(benchmarks) if benchmarks is not None else seen
        self.quality = list(quality)
        self._index: dict[tuple[str, int | None, str], Score] = {}
        for s in self.scores:
            key = (s.model, s.step, s.benchmark)
            if key in self._index:
                raise ValueError(f"two scores for {s.label} on {s.benchmark}")
            self._index[key] = s

    @classmethod
    def from_evaluations(
        cls,
        evaluations: Iterable[EvalResult],
        runs: Iterable[RunInfo] = (),
        *,
        base: str = BASE,
        samples: Mapping[str, int] | None = None,
        benchmarks: Sequence[str] | None = None,
        quality: Iterable[TraceQuality] = (),
        protocols: Mapping[str, str] | None = None,
        unreadable: Iterable[tuple[str, str]] = (),
    ) -> Results:
        """The study's tables from evaluations made with the :class:`Evaluator` directly.

        Each result's label says what it is: ``base`` (or the label given as ``base``) for the
        base model, ``<run>@<step>`` for a checkpoint (the labels an
        :class:`~tracedistill.Experiment` writes). ``samples`` maps a label to the training
        samples seen at that checkpoint, for the per-step tables. Load stored evaluations with
        ``EvalStore(directory).results()``. Each evaluation records which answers its grader
        counted; ``protocols`` states it, per benchmark, for older evaluations that did not
        (e.g. ``{"MATH-500": MathVerifier(extraction="boxed").protocol}``). ``unreadable``
        lists what could not be read, ``(what, why)``, shown above the tables: pass the list
        that ``EvalStore(directory).results(errors=errors)`` fills (read after the results).

        Raises:
            ValueError: a label is neither the base label nor ``<run>@<step>``, or two results
                have the same label and benchmark.
        """
        samples = samples or {}
        scores = []
        for result in evaluations:
            model, step = parse_label(result.label, base=base)
            scores.append(
                Score.from_evaluation(
                    result, model=model, step=step, samples=samples.get(result.label)
                )
            )
        return cls(
            scores,
            runs,
            benchmarks=benchmarks,
            quality=quality,
            protocols=protocols,
            unreadable=unreadable,
        )

    # --- lookups ---------------------------------------------------------------------------

    @property
    def run_names(self) -> list[str]:
        """Runs in order of first appearance (the base model excluded)."""
        names: list[str] = []
        for s in self.scores:
            if s.model != BASE and s.model not in names:
                names.append(s.model)
        return names

    def score(self, model: str, step: int | None, benchmark: str) -> Score | None:
        """The score of one model or checkpoint on one benchmark, if graded."""
        return self._index.get((model, step, benchmark))

    def base(self, benchmark: str) -> Score | None:
        """The base model's score on a benchmark."""
        return self.score(BASE, None, benchmark)

    def steps(self, run: str) -> list[int]:
        """The checkpoint steps of a run, ascending."""
        return sorted({s.step for s in self.scores if s.model == run and s.step is not None})

    def best(self, run: str, benchmark: str) -> Score | None:
        """The run's best checkpoint on a benchmark; ties go to the earlier step.

        Only complete scores compete: a partial one (``Score.complete`` False) is left out.
        """
        candidates = [
            s
            for s in self.scores
            if s.model == run and s.benchmark == benchmark and s.step is not None and s.complete
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda s: (s.accuracy, -(s.step or 0)))

    def _partial_only(self, run: str, benchmark: str) -> str | None:
        """What a best-checkpoint cell says when the run's only scores there are partial."""
        partial = [
            f"step {s.step} {s.partial_note()}"
            for step in self.steps(run)
            if (s := self.score(run, step, benchmark)) is not None and not s.complete
        ]
        return f"none complete ({', '.join(partial)})" if partial else None

    def _other(self, benchmark: str) -> list[str]:
        return [b for b in self.benchmarks if b != benchmark]

    # --- tables ----------------------------------------------------------------------------

    def per_step(self, run: str) -> list[dict[str, Any]]:
        """Rows of step, samples seen and each benchmark's accuracy with its interval."""
        rows: list[dict[str, Any]] = []
        for step in self.steps(run):
            row: dict[str, Any] = {"step": step, "samples": None}
            for b in self.benchmarks:
                s = self.score(run, step, b)
                row[b] = None if s is None else s.cell()
                if s is not None and s.samples is not None:
                    row["samples"] = s.samples
            rows.append(row)
        base_row: dict[str, Any] = {"step": "base", "samples": None}
        for b in self.benchmarks:
            s = self.base(b)
            base_row[b] = None if s is None else s.cell()
        rows.append(base_row)
        return rows

    def best_in_domain(self) -> list[dict[str, Any]]:
        """Per run: the best accuracy on each benchmark and the step where it was reached."""
        rows: list[dict[str, Any]] = []
        for run in self.run_names:
            row: dict[str, Any] = {"run": run}
            for b in self.benchmarks:
                best = self.best(run, b)
                row[f"best {b}"] = self._partial_only(run, b) if best is None else best.cell()
                row[f"{b} step"] = None if best is None else best.step
            rows.append(row)
        base_row: dict[str, Any] = {"run": BASE}
        for b in self.benchmarks:
            s = self.base(b)
            base_row[f"best {b}"] = None if s is None else s.cell()
            base_row[f"{b} step"] = None
        rows.append(base_row)
        return rows

    def cross_domain(self) -> list[dict[str, Any]]:
        """Per run: the other benchmarks' scores at the best in-domain checkpoint."""
        rows: list[dict[str, Any]] = []
        for run in self.run_names:
            info = self.runs.get(run)
            if info is None:
                continue
            best = self.best(run, info.in_domain)
            if best is None:
                continue
            row: dict[str, Any] = {
                "run": run,
                "best in-domain": f"{info.in_domain} @ step {best.step}",
                "in-domain score": best.cell(),
            }
            for other in self._other(info.in_domain):
                s = self.score(run, best.step, other)
                row[f"{other} (cross-domain)"] = None if s is None else s.cell()
            rows.append(row)
        return rows

    def delta_from_base(self) -> list[dict[str, Any]]:
        """Per run and benchmark: best checkpoint minus base, paired, with significance."""
        rows: list[dict[str, Any]] = []
        for run in self.run_names:
            row: dict[str, Any] = {"run": run}
            for b in self.benchmarks:
                best, base = self.best(run, b), self.base(b)
                cell = None if best is None or base is None else compare(base, best).cell()
                if cell is not None and base is not None and not base.complete:
                    cell += f" (base {base.partial_note()})"
                row[f"best {b} vs base"] = cell
            rows.append(row)
        return rows

    def head_to_head(self) -> list[dict[str, Any]]:
        """For each task trained with two or more teachers: each pair of runs compared.

        Rows: the best in-domain score of each run, and the cross-domain score at that
        checkpoint, with the paired difference (second run minus first).
        """
        rows: list[dict[str, Any]] = []
        by_task: dict[str, list[RunInfo]] = {}
        for run in self.run_names:
            info = self.runs.get(run)
            if info is not None:
                by_task.setdefault(info.task, []).append(info)
        for task, infos in by_task.items():
            for i, a in enumerate(infos):
                for b in infos[i + 1 :]:
                    if a.teacher == b.teacher:
                        continue
                    best_a, best_b = self.best(a.name, a.in_domain), self.best(b.name, b.in_domain)
                    if best_a is None or best_b is None:
                        continue
                    rows.append(self._h2h_row(task, f"best {a.in_domain}", best_a, best_b))
                    for other in self._other(a.in_domain):
                        sa = self.score(a.name, best_a.step, other)
                        sb = self.score(b.name, best_b.step, other)
                        if sa is not None and sb is not None:
                            rows.append(
                                self._h2h_row(task, f"{other} at best {a.in_domain}", sa, sb)
                            )
        return rows

    @staticmethod
    def _h2h_row(task: str, metric: str, a: Score, b: Score) -> dict[str, Any]:
        return {
            "task": task,
            "metric": metric,
            "first": f"{a.label}: {a.cell()}",
            "second": f"{b.label}: {b.cell()}",
            "second - first": compare(a, b).cell(),
        }

    def recommended(self) -> list[dict[str, Any]]:
        """Per run: the recommended checkpoint and why.

        The best in-domain checkpoint; among checkpoints whose in-domain accuracy is not
        significantly below it (paired McNemar, 5%), the one with the best mean over the other
        benchmarks is named as the balanced alternative.
        """
        rows: list[dict[str, Any]] = []
        for run in self.run_names:
            info = self.runs.get(run)
            if info is None:
                continue
            best = self.best(run, info.in_domain)
            if best is None:
                continue
            others = self._other(info.in_domain)

            def cross(step: int | None, others: list[str] = others, run: str = run) -> float:
                values = [
                    s.accuracy
                    for o in others
                    if (s := self.score(run, step, o)) is not None and s.complete
                ]
                return statistics.fmean(values) if values else 0.0

            tied = [
                s
                for step in self.steps(run)
                if (s := self.score(run, step, info.in_domain)) is not None
                and s.complete
                and (s is best or compare(s, best).p_value >= ALPHA or s.accuracy >= best.accuracy)
            ]
            balanced = max(tied, key=lambda s: (cross(s.step), s.accuracy, -(s.step or 0)))
            row: dict[str, Any] = {
                "run": run,
                "in-domain": info.in_domain,
                "recommended step": best.step,
                "reason": f"highest {info.in_domain} ({best.cell()})",
                "balanced alternative": None,
            }
            if balanced.step != best.step:
                row["balanced alternative"] = (
                    f"step {balanced.step}: {info.in_domain} {balanced.cell()} is not "
                    f"significantly lower, and the other benchmarks average "
                    f"{100 * cross(balanced.step):.1f}% vs {100 * cross(best.step):.1f}%"
                )
            rows.append(row)
        return rows

    def pareto(self, x: str | None = None, y: str | None = None) -> list[dict[str, Any]]:
        """The checkpoints (and base) no other point beats on both benchmarks ``x`` and ``y``.

        Only complete scores are points; the models with a partial score on ``x`` or ``y``
        follow the frontier in rows that say they were left out.
        """
        if len(self.benchmarks) < 2 and (x is None or y is None):
            return []
        x = x or self.benchmarks[0]
        y = y or self.benchmarks[1]
        points = self._points(x, y)
        frontier = [
            p
            for p in points
            if not any(
                q is not p and q[1] >= p[1] and q[2] >= p[2] and (q[1] > p[1] or q[2] > p[2])
                for q in points
            )
        ]
        frontier.sort(key=lambda p: -p[1])
        rows = [
            {"model": label, x: f"{100 * ax:.1f}%", y: f"{100 * ay:.1f}%"}
            for label, ax, ay in frontier
        ]
        rows.extend(
            {"model": f"{sx.label} (left out: partial)", x: sx.cell(), y: sy.cell()}
            for sx, sy in self._pairs(x, y)
            if not (sx.complete and sy.complete)
        )
        return rows

    def _pairs(self, x: str, y: str) -> list[tuple[Score, Score]]:
        """The base and every checkpoint scored on both ``x`` and ``y``."""
        pairs: list[tuple[Score, Score]] = []
        models = [(BASE, None), *[(r, s) for r in self.run_names for s in self.steps(r)]]
        for model, step in models:
            sx, sy = self.score(model, step, x), self.score(model, step, y)
            if sx is not None and sy is not None:
                pairs.append((sx, sy))
        return pairs

    def _points(self, x: str, y: str) -> list[tuple[str, float, float]]:
        return [
            (sx.label, sx.accuracy, sy.accuracy)
            for sx, sy in self._pairs(x, y)
            if sx.complete and sy.complete
        ]

    def format_table(self) -> list[dict[str, Any]]:
        """Format compliance and response length of every graded model, per benchmark."""
        rows: list[dict[str, Any]] = []
        models = [(BASE, None), *[(r, s) for r in self.run_names for s in self.steps(r)]]
        for model, step in models:
            for b in self.benchmarks:
                s = self.score(model, step, b)
                if s is None or s.format_compliance is None:
                    continue
                rows.append(
                    {
                        "model": s.label,
                        "benchmark": b,
                        "format compliance": _pct(s.format_compliance),
                        "passed, answer not in the format": _off_format(s),
                        "mean response chars": _num(s.mean_response_chars),
                    }
                )
        return rows

    def grading_table(self) -> list[dict[str, Any]]:
        """Per benchmark: which answers count, and which extraction found the passed ones.

        ``answers that count`` is the grader's protocol when it was given (``protocols``);
        ``passed answers found by`` counts, over every graded model, the extraction that
        found each passed answer (from the grades' ``details["extraction"]``).
        """
        rows: list[dict[str, Any]] = []
        for b in self.benchmarks:
            counts: collections.Counter[str] = collections.Counter()
            for s in self.scores:
                if s.benchmark == b:
                    counts.update(s.extractions)
            protocol = self.protocols.get(b)
            if protocol is None and not counts:
                continue
            total = sum(counts.values())
            found = ", ".join(
                f"{EXTRACTION_WORDS.get(k, k)} {v:,} ({100 * v / total:.1f}%)"
                for k, v in counts.most_common()
            )
            rows.append(
                {
                    "benchmark": b,
                    "answers that count": protocol or "not recorded",
                    "passed answers found by": found or "—",
                }
            )
        return rows

    def quality_table(self) -> list[dict[str, Any]]:
        """Trace quality per teacher and task.

        Token figures name their unit: the teacher's tokens (its provider's count) or the
        student's (its tokenizer, as training measured the examples against ``max_length``).
        """
        return [
            {
                "teacher": q.teacher,
                "task": q.task,
                "pool": q.pool,
                "pass rate": _pct(q.pass_rate),
                "mean tokens (teacher)": _num(q.mean_tokens),
                "median tokens (teacher)": _num(q.median_tokens),
                "cut at max_tokens (teacher)": _pct(q.truncation_rate),
                "over max_length (student tokens)": None
                if q.over_max_length is None
                else f"{_pct(q.over_max_length)} > {q.max_length:,}",
                "self-corrections/trace": _num(q.self_corrections_per_trace, 2),
                "format compliance": _pct(q.format_compliance),
                "spend": f"${q.spend_usd:,.2f}",
            }
            for q in self.quality
        ]

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Every table, by title (only the trace-quality table before anything is evaluated)."""
        out: dict[str, list[dict[str, Any]]] = {}
        if self.quality:
            out["Trace quality"] = self.quality_table()
        if not self.scores:
            return out
        for run in self.run_names:
            out[f"Run {run}: per step"] = self.per_step(run)
        out["Best in-domain"] = self.best_in_domain()
        out["Cross-domain at the best in-domain checkpoint"] = self.cross_domain()
        out["Delta from base (paired; * = significant at 5%)"] = self.delta_from_base()
        out["Teacher head-to-head (paired; * = significant at 5%)"] = self.head_to_head()
        out["Recommended checkpoint"] = self.recommended()
        out["Pareto frontier"] = self.pareto()
        out["Format compliance and response length"] = self.format_table()
        out["Grading protocol"] = self.grading_table()
        return {k: v for k, v in out.items() if v}

    # --- output ----------------------------------------------------------------------------

    def dataframes(self) -> dict[str, Any]:
        """Every table as a pandas DataFrame, by title."""
        import pandas as pd

        return {title: pd.DataFrame(rows) for title, rows in self.tables().items()}

    def to_markdown(self) -> str:
        """Every table as Markdown (after what could not be read, if anything)."""
        parts = [f"{_INTRO} Format compliance: {COMPLIANCE_RULE}."]
        if self.unreadable:
            parts.append(
                "**Not included** (could not be read; nothing stored was changed):\n\n"
                + "\n".join(f"- {what}: {why}" for what, why in self.unreadable)
            )
        for title, rows in self.tables().items():
            parts.append(f"## {title}\n\n{table_markdown(rows)}")
        return "\n\n".join(parts) + "\n"

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        head = (
            f"Results: {len(self.run_names)} run(s) ({', '.join(self.run_names) or 'none'}), "
            f"benchmarks {', '.join(self.benchmarks) or 'none'}, {len(self.scores)} scores"
        )
        best = self.best_in_domain() if self.scores else []
        if not best:
            quality = f"\n\nTrace quality:\n{table_markdown(self.quality_table())}"
            return head + " (nothing evaluated yet)" + (quality if self.quality else "")
        return f"{head}\n\nBest in-domain (accuracy % [95% interval]):\n{table_markdown(best)}"

    def _repr_html_(self) -> str:
        tables = self.tables()
        parts = [self._unreadable_html()]
        if not tables:
            parts.append("<p>Results: nothing evaluated yet.</p>")
        parts.extend(f"<h3>{html.escape(t)}</h3>{table_html(rows)}" for t, rows in tables.items())
        return "".join(parts)

    def _unreadable_html(self) -> str:
        if not self.unreadable:
            return ""
        items = "".join(
            f"<li><b>{html.escape(what)}</b>: {html.escape(why)}</li>"
            for what, why in self.unreadable
        )
        return (
            "<p><b>Not included</b> (could not be read; nothing stored was changed):</p>"
            f"<ul>{items}</ul>"
        )

    def plot_steps(self, path: str | Path | None = None) -> Any:
        """Accuracy against step per benchmark and run, with 95% error bars (a Figure).

        The base model is a dashed line with its interval shaded; with ``path`` the figure is
        also written there (its folder created).
        """
        from tracedistill.report import plots

        return _finish(plots.steps_figure(self), path)

    def plot_format(self, path: str | Path | None = None) -> Any:
        """Format compliance against step per run and benchmark (a Figure), base dashed."""
        from tracedistill.report import plots

        return _finish(plots.format_figure(self), path)

    def plot_pareto(self, path: str | Path | None = None) -> Any:
        """Every checkpoint over the first two benchmarks, the frontier and the base marked."""
        from tracedistill.report import plots

        return _finish(plots.pareto_figure(self), path)

    def to_html(
        self, path: str | Path, *, title: str = "tracedistill report", preamble: str = ""
    ) -> Path:
        """Write a single self-contained HTML report (tables and embedded plots)."""
        path = Path(path)
        images = []
        try:
            from tracedistill.report import plots

            # Figures outside pyplot: writing a report shows nothing and leaks nothing.
            figures = [
                plots.steps_figure(self, managed=False),
                plots.pareto_figure(self, managed=False),
            ]
            if any(s.format_compliance is not None for s in self.scores):
                figures.insert(1, plots.format_figure(self, managed=False))
            for fig in figures:
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=110)
                images.append(base64.b64encode(buf.getvalue()).decode())
        except ImportError:  # matplotlib is the optional `plot` extra
            images = []
        body = [f"<h1>{html.escape(title)}</h1>"]
        if preamble:
            body.append(f"<pre>{html.escape(preamble)}</pre>")
        body.append(f"<p>{html.escape(f'{_INTRO} Format compliance: {COMPLIANCE_RULE}.')}</p>")
        body.extend(f'<img alt="plot" src="data:image/png;base64,{img}">' for img in images)
        body.append(self._repr_html_())
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
            "table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
            "img{max-width:100%}"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>",
            encoding="utf-8",
        )
        return path


def _protocols(scores: Sequence[Score], given: Mapping[str, str]) -> dict[str, str]:
    """Per benchmark: the protocol its scores record (all, when they differ), else the given."""
    recorded: dict[str, list[str]] = {}
    for s in scores:
        if s.protocol is not None and s.protocol not in recorded.setdefault(s.benchmark, []):
            recorded[s.benchmark].append(s.protocol)
    out = dict(given)
    for bench, found in recorded.items():
        if len(found) == 1:
            out[bench] = found[0]
        elif found:
            out[bench] = "differs between evaluations: " + " | ".join(found)
    return out


def _finish(fig: Any, path: str | Path | None) -> Any:
    if path is not None:
        from tracedistill.report import plots

        plots.save(fig, path)
    return fig
