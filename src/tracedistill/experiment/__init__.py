"""The whole study in one object: runs declared, stages driven, everything in one directory.

An :class:`Experiment` holds a list of :class:`Run` (a teacher, a task, a problem pool and a
training configuration each) and drives every run through five stages::

    generate -> verify -> filter -> train -> evaluate

plus one evaluation of the base model. Each stage is resumable on its own (stored request keys,
stored verdicts, saved checkpoints, per-problem evaluation logs), so calling :meth:`Experiment.run`
again after a crash or a Ctrl-C continues where it stopped and redoes nothing that finished.

The package is a small driver over one module per stage: ``driver`` (:class:`Experiment`),
``generate`` (the pool and the teacher's traces), ``verify``, ``select`` (the filter stage and
:class:`Filters`), ``train``, ``evaluate``, with ``plan`` (the dry run's requests, tokens and
cost), ``rundir`` (the run directory) and ``collect`` (the :class:`~tracedistill.Results` from
what is stored).

The run directory::

    experiment.json              provenance: version, configuration hash, benchmark hashes,
                                 Tinker run ids, spend (rewritten after each stage)
    experiment.log               the log of every call to run()
    traces/<teacher>-<task>/     one TraceStore per teacher and task (shared by runs that only
                                 differ in training, so no trace is bought twice)
    runs/<run>/pool.jsonl        the run's problem pool (sampled once, then reused)
    runs/<run>/train_set.json    the request keys selected for training, and why the rest not
    runs/<run>/training/         the trainer's run directory (config, metrics, checkpoints)
    runs/<run>/stages.json       which stages finished, with their configuration hash
    evaluations/<label>/<benchmark>.jsonl   per-problem responses and grades
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracedistill import _lazy

if TYPE_CHECKING:
    from tracedistill.experiment.config import (
        STAGES,
        Baseline,
        ExperimentSamplerFactory,
        Generation,
        Run,
    )
    from tracedistill.experiment.config import SamplerFactory as SamplerFactory  # deprecated
    from tracedistill.experiment.driver import Experiment
    from tracedistill.experiment.plan import Plan, PlanRow
    from tracedistill.experiment.select import Filters

#: Public name -> the module defining it, imported on first use (see ``tracedistill._lazy``).
_EXPORTS = {
    "Baseline": "tracedistill.experiment.config",
    "Experiment": "tracedistill.experiment.driver",
    "Filters": "tracedistill.experiment.select",
    "Generation": "tracedistill.experiment.config",
    "Plan": "tracedistill.experiment.plan",
    "PlanRow": "tracedistill.experiment.plan",
    "Run": "tracedistill.experiment.config",
    "STAGES": "tracedistill.experiment.config",
    "ExperimentSamplerFactory": "tracedistill.experiment.config",
}
#: Deprecated name -> its replacement (kept one release; each use warns).
_RENAMED = {"SamplerFactory": "tracedistill.experiment.config.ExperimentSamplerFactory"}

__all__ = [
    "STAGES",
    "Baseline",
    "Experiment",
    "ExperimentSamplerFactory",
    "Filters",
    "Generation",
    "Plan",
    "PlanRow",
    "Run",
]

if not TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.attach(__name__, _EXPORTS, globals(), renamed=_RENAMED)
