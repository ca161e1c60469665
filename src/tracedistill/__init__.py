"""tracedistill: reasoning-trace distillation as an async, typed library.

Generate reasoning traces from teacher models, verify them, fine-tune a student on the correct
ones, evaluate every checkpoint and report the study::

    from tracedistill import Experiment, Run, TrainConfig

The abstractions (each a folder with a small interface and one module per backend):
:class:`Teacher`, :class:`Verifier`, :class:`TraceStore`, :class:`Trainer`, :class:`Evaluator`
and, on top, :class:`Experiment`. Backends that need heavy optional libraries (torch, the
tinker SDK) are imported from their own modules: ``tracedistill.training.local``,
``tracedistill.training.tinker``, ``tracedistill.evaluation.samplers.local`` and
``tracedistill.evaluation.samplers.tinker``.
"""

from tracedistill._version import __version__
from tracedistill.errors import TraceDistillError
from tracedistill.evaluation import (
    Benchmark,
    EvalResult,
    Evaluator,
    Sampler,
    custom_benchmark,
    greedy,
    math500,
    mbpp_plus,
)
from tracedistill.evaluation.samplers import OpenAICompatibleSampler
from tracedistill.experiment import Experiment, Filters, Generation, Plan, Run
from tracedistill.problems import ProblemPool, ProblemSource
from tracedistill.records import (
    SCHEMA_VERSION,
    CodeTests,
    FinishReason,
    FunctionTests,
    Message,
    Problem,
    ReasoningKind,
    SamplingParams,
    StdioCase,
    TaskKind,
    TokenUsage,
    Trace,
    Verdict,
    VerdictReason,
    request_key,
)
from tracedistill.report import Results, Score
from tracedistill.store import (
    Durability,
    JsonlTraceStore,
    StoreStats,
    TraceFilter,
    TraceStore,
)
from tracedistill.teachers import (
    AnthropicTeacher,
    OpenAICompatTeacher,
    OpenRouterTeacher,
    Pricing,
    RateLimits,
    ReplayTeacher,
    Teacher,
    generate,
)
from tracedistill.training import Checkpoint, TrainConfig, Trainer, TrainingResult
from tracedistill.verifiers import CodeVerifier, MathVerifier, Verifier

__all__ = [
    "SCHEMA_VERSION",
    "AnthropicTeacher",
    "Benchmark",
    "Checkpoint",
    "CodeTests",
    "CodeVerifier",
    "Durability",
    "EvalResult",
    "Evaluator",
    "Experiment",
    "Filters",
    "FinishReason",
    "FunctionTests",
    "Generation",
    "JsonlTraceStore",
    "MathVerifier",
    "Message",
    "OpenAICompatTeacher",
    "OpenAICompatibleSampler",
    "OpenRouterTeacher",
    "Plan",
    "Pricing",
    "Problem",
    "ProblemPool",
    "ProblemSource",
    "RateLimits",
    "ReasoningKind",
    "ReplayTeacher",
    "Results",
    "Run",
    "Sampler",
    "SamplingParams",
    "Score",
    "StdioCase",
    "StoreStats",
    "TaskKind",
    "Teacher",
    "TokenUsage",
    "Trace",
    "TraceDistillError",
    "TraceFilter",
    "TraceStore",
    "TrainConfig",
    "Trainer",
    "TrainingResult",
    "Verdict",
    "VerdictReason",
    "Verifier",
    "__version__",
    "custom_benchmark",
    "generate",
    "greedy",
    "math500",
    "mbpp_plus",
    "request_key",
]


def __getattr__(name: str) -> object:
    if name == "TrainingRun":  # renamed TrainingResult; kept (deprecated) for one release
        from tracedistill import training

        return getattr(training, name)
    raise AttributeError(f"module 'tracedistill' has no attribute {name!r}")
