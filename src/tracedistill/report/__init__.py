"""The study's results: tables with intervals and paired tests, plots, and an HTML report.

:class:`Results` holds one :class:`Score` per (model or checkpoint, benchmark) and computes the
tables of the study: per run and step, the best in-domain checkpoint, the cross-domain score at
that checkpoint, the delta from the base model, the teacher head-to-head, the recommended
checkpoint per run and the Pareto frontier over the benchmarks. Every accuracy carries its 95%
Wilson interval; every difference is paired problem by problem (exact McNemar test and
Newcombe's interval), so a reader sees which differences are more than noise.

Modules: ``scores`` (:class:`Score`, :func:`compare`, labels), ``quality`` (the trace-quality
table), ``results`` (:class:`Results`: the tables, text, HTML and plots).
"""

from __future__ import annotations

from tracedistill.report.quality import TraceQuality, trace_quality
from tracedistill.report.results import Results
from tracedistill.report.scores import ALPHA, BASE, Comparison, RunInfo, Score, compare, parse_label

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
