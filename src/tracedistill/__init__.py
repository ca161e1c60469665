"""tracedistill: reasoning-trace distillation as an async, typed library.

Generate reasoning traces from teacher models, verify them, fine-tune a student on the correct
ones, evaluate every checkpoint and report the study::

    from tracedistill import Experiment, Run, TrainConfig

The abstractions (each a folder with a small interface and one module per backend):
:class:`Teacher`, :class:`Verifier`, :class:`TraceStore`, :class:`Trainer`, :class:`Evaluator`
and, on top, :class:`Experiment`. Every backend and problem preset is importable from here;
those that need heavy optional libraries (torch, the tinker SDK: ``TinkerTrainer``,
``LocalTrainer``, ``TinkerSampler``, ``LocalSampler``, ``TinkerTeacher``) load on first use, so
``import tracedistill`` pulls in neither.
"""

import importlib
from typing import TYPE_CHECKING

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
from tracedistill.evaluation.samplers import AnthropicClient, OpenAICompatibleSampler
from tracedistill.experiment import Experiment, Filters, Generation, Plan, Run
from tracedistill.problems import (
    ProblemPool,
    ProblemSource,
    apps,
    code_contests,
    codeforces,
    mbpp,
    numina_math,
    open_code_reasoning,
    openr1_math,
    taco,
)
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

if TYPE_CHECKING:
    from tracedistill.clients.local import LocalSampler
    from tracedistill.clients.tinker import TinkerSampler
    from tracedistill.teachers.tinker import TinkerTeacher
    from tracedistill.training.local import LocalTrainer
    from tracedistill.training.tinker import TinkerTrainer

# Backends that pull in torch or the tinker SDK load on first use, so `import tracedistill`
# stays light: name -> module.
_LAZY = {
    "LocalSampler": "tracedistill.clients.local",
    "LocalTrainer": "tracedistill.training.local",
    "TinkerSampler": "tracedistill.clients.tinker",
    "TinkerTeacher": "tracedistill.teachers.tinker",
    "TinkerTrainer": "tracedistill.training.tinker",
}

__all__ = [
    "SCHEMA_VERSION",
    "AnthropicClient",
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
    "LocalSampler",
    "LocalTrainer",
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
    "TinkerSampler",
    "TinkerTeacher",
    "TinkerTrainer",
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
    "apps",
    "code_contests",
    "codeforces",
    "custom_benchmark",
    "generate",
    "greedy",
    "math500",
    "mbpp",
    "mbpp_plus",
    "numina_math",
    "open_code_reasoning",
    "openr1_math",
    "request_key",
    "taco",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name == "TrainingRun":  # renamed TrainingResult; kept (deprecated) for one release
        from tracedistill import training

        return getattr(training, name)
    raise AttributeError(f"module 'tracedistill' has no attribute {name!r}")
