"""What an experiment declares: its runs, how each run generates, which traces it trains on."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from tracedistill import _lazy
from tracedistill.clients.base import Sampler
from tracedistill.clients.ratelimit import RateLimits
from tracedistill.errors import ConfigurationError
from tracedistill.experiment.select import Filters
from tracedistill.problems.base import ProblemSource
from tracedistill.records import Problem, TaskKind
from tracedistill.teachers.base import Teacher
from tracedistill.training.base import TrainConfig

__all__ = ["STAGES", "Baseline", "ExperimentSamplerFactory", "Generation", "Run"]

#: The stages of every run, in order.
STAGES = ("generate", "verify", "filter", "train", "evaluate")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Builds the sampler of what an experiment evaluates: called with a checkpoint and its run, or
#: with the baseline and ``None`` (unlike the evaluator's one-argument
#: :data:`~tracedistill.evaluation.evaluator.CheckpointSamplerFactory`).
ExperimentSamplerFactory = Callable[[Any, "Run | None"], Sampler]

if TYPE_CHECKING:
    #: Deprecated name of :data:`ExperimentSamplerFactory` (kept one release).
    SamplerFactory = ExperimentSamplerFactory
else:
    __getattr__ = _lazy.deprecated(
        __name__, {"SamplerFactory": f"{__name__}.ExperimentSamplerFactory"}
    )

#: The model an experiment evaluates as its baseline (the untrained student): a
#: :class:`Sampler`, or a model name or path the sampler factory (or the default backend) takes.
Baseline = Sampler | str | os.PathLike[str]


def _name(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"run name {value!r} must be letters, digits, '.', '_' or '-' (it names a folder)"
        )


@attrs.frozen(slots=True, kw_only=True)
class Generation:
    """How a run's traces are generated.

    ``expected_completion_tokens`` and ``expected_pass_rate`` only feed the dry run's estimate
    (defaults: half of ``max_tokens``, and 70% as the study's Sonnet pools had).
    """

    samples_per_problem: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    concurrency: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    budget_usd: float | None = None
    limits: RateLimits | None = None
    resample_truncated: bool = False
    expected_completion_tokens: int | None = None
    expected_pass_rate: float = attrs.field(
        default=0.7, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )


def _task(value: TaskKind | str) -> TaskKind:
    try:
        return TaskKind(value)
    except ValueError:
        raise ConfigurationError(f"task must be 'math' or 'code', got {value!r}") from None


@attrs.frozen(slots=True, kw_only=True, eq=False)
class Run:
    """One training run of the study: a teacher's traces on one task, then a student.

    Args:
        name: the run's name (a folder name; e.g. ``sonnet-math``).
        task: ``math`` or ``code``; decides the verifier and the in-domain benchmark.
        teacher: who answers the problems (a replay teacher brings its own problems).
        train: the training configuration.
        problems: the problem source or list (default: the teacher's own, for replay).
        pool_size: how many problems to draw (None: all of them).
        seed: the pool's sampling seed.
        generation: concurrency, budget, samples per problem.
        filters: which verified traces are trained on.
    """

    name: str = attrs.field(validator=_name)
    task: TaskKind = attrs.field(converter=_task)
    teacher: Teacher
    train: TrainConfig
    problems: ProblemSource | Iterable[Problem] | None = None
    pool_size: int | None = None
    seed: int = 0
    generation: Generation = attrs.field(factory=Generation)
    filters: Filters = attrs.field(factory=Filters)

    def __attrs_post_init__(self) -> None:
        if self.problems is None and not hasattr(self.teacher, "problems"):
            raise ConfigurationError(
                f"run {self.name!r}: give problems= (the teacher {self.teacher.name!r} has no "
                "problems of its own)"
            )
        if self.pool_size is not None and self.pool_size < 1:
            raise ConfigurationError(f"run {self.name!r}: pool_size must be >= 1")

    def describe(self) -> dict[str, Any]:
        """A JSON-compatible description (no secret) used for provenance and the stage hash."""
        return {
            "name": self.name,
            "task": str(self.task),
            "teacher": dict(self.teacher.describe()),
            "train": self.train.to_dict(),
            "problems": _describe_problems(self.problems, self.teacher),
            "pool_size": self.pool_size,
            "seed": self.seed,
            "generation": {
                "samples_per_problem": self.generation.samples_per_problem,
                "resample_truncated": self.generation.resample_truncated,
            },
            "filters": attrs.asdict(self.filters),
        }


def _describe_problems(problems: object, teacher: Teacher) -> str:
    if problems is None:
        return f"from teacher {teacher.name}"
    name = getattr(problems, "name", None)
    return f"{type(problems).__name__}:{name}" if name else type(problems).__name__
