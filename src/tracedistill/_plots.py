"""Moved to :mod:`tracedistill.report.plots`, the report's figures (kept one release)."""

from tracedistill.report.plots import format_figure, pareto_figure, save, steps_figure

__all__ = ["format_figure", "pareto_figure", "save", "steps_figure"]
