"""The study's results: tables with intervals and paired tests, plots, and an HTML report.

:class:`Results` holds one :class:`Score` per (model or checkpoint, benchmark) and computes the
tables of the study: per run and step, the best in-domain checkpoint, the cross-domain score at
that checkpoint, the delta from the base model, the teacher head-to-head, the recommended
checkpoint per run and the Pareto frontier over the benchmarks. Every accuracy carries its 95%
Wilson interval; every difference is paired problem by problem (exact McNemar test and
Newcombe's interval), so a reader sees which differences are more than noise.

Modules: ``scores`` (:class:`Score`, :func:`compare`, labels), ``quality`` (the trace-quality
table), ``results`` (:class:`Results`: the tables, text, HTML and plots), ``plots`` (the figures;
matplotlib, the optional ``plot`` extra, is imported there only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracedistill import _lazy

if TYPE_CHECKING:
    from tracedistill.report.quality import TraceQuality, trace_quality
    from tracedistill.report.results import Results
    from tracedistill.report.scores import (
        ALPHA,
        BASE,
        Comparison,
        RunInfo,
        Score,
        compare,
        parse_label,
    )

#: Public name -> the module defining it, imported on first use (see ``tracedistill._lazy``).
_EXPORTS = {
    "ALPHA": "tracedistill.report.scores",
    "BASE": "tracedistill.report.scores",
    "Comparison": "tracedistill.report.scores",
    "Results": "tracedistill.report.results",
    "RunInfo": "tracedistill.report.scores",
    "Score": "tracedistill.report.scores",
    "TraceQuality": "tracedistill.report.quality",
    "compare": "tracedistill.report.scores",
    "parse_label": "tracedistill.report.scores",
    "trace_quality": "tracedistill.report.quality",
}

__all__ = [
    "ALPHA",
    "BASE",
    "Comparison",
    "Results",
    "RunInfo",
    "Score",
    "TraceQuality",
    "compare",
    "parse_label",
    "trace_quality",
]

if not TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.attach(__name__, _EXPORTS, globals())
