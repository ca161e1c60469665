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

from typing import TYPE_CHECKING, Any

from tracedistill import _lazy

if TYPE_CHECKING:
    from tracedistill._version import __version__
    from tracedistill.clients.anthropic import AnthropicClient
    from tracedistill.clients.local import LocalSampler
    from tracedistill.clients.openai_compat import OpenAICompatibleSampler
    from tracedistill.clients.tinker import TinkerSampler
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
        ClientTeacher,
        OpenAICompatTeacher,
        OpenRouterTeacher,
        Pricing,
        RateLimits,
        ReplayTeacher,
        Teacher,
        generate,
    )
    from tracedistill.teachers.tinker import TinkerTeacher
    from tracedistill.training import Checkpoint, TrainConfig, Trainer, TrainingResult
    from tracedistill.training.local import LocalTrainer
    from tracedistill.training.tinker import TinkerTrainer
    from tracedistill.verifiers import CodeVerifier, MathVerifier, Verifier

    # Deprecated name (kept one release; not exported): a plain alias for type checkers, since
    # PEP 702's @deprecated cannot mark a type alias; at run time `_renamed` returns it with a
    # DeprecationWarning.
    TrainingRun = TrainingResult

#: Public name -> the module defining it, imported on first use (see ``tracedistill._lazy``):
#: ``import tracedistill`` loads none of them, so it pulls in neither torch, transformers, the
#: tinker SDK nor numpy; ``from tracedistill import Experiment`` loads what the experiment needs.
_EXPORTS = {
    "AnthropicClient": "tracedistill.clients.anthropic",
    "AnthropicTeacher": "tracedistill.teachers",
    "ClientTeacher": "tracedistill.teachers",
    "Benchmark": "tracedistill.evaluation",
    "Checkpoint": "tracedistill.training",
    "CodeTests": "tracedistill.records",
    "CodeVerifier": "tracedistill.verifiers",
    "Durability": "tracedistill.store",
    "EvalResult": "tracedistill.evaluation",
    "Evaluator": "tracedistill.evaluation",
    "Experiment": "tracedistill.experiment",
    "Filters": "tracedistill.experiment",
    "FinishReason": "tracedistill.records",
    "FunctionTests": "tracedistill.records",
    "Generation": "tracedistill.experiment",
    "JsonlTraceStore": "tracedistill.store",
    "LocalSampler": "tracedistill.clients.local",
    "LocalTrainer": "tracedistill.training.local",
    "MathVerifier": "tracedistill.verifiers",
    "Message": "tracedistill.records",
    "OpenAICompatTeacher": "tracedistill.teachers",
    "OpenAICompatibleSampler": "tracedistill.clients.openai_compat",
    "OpenRouterTeacher": "tracedistill.teachers",
    "Plan": "tracedistill.experiment",
    "Pricing": "tracedistill.teachers",
    "Problem": "tracedistill.records",
    "ProblemPool": "tracedistill.problems",
    "ProblemSource": "tracedistill.problems",
    "RateLimits": "tracedistill.teachers",
    "ReasoningKind": "tracedistill.records",
    "ReplayTeacher": "tracedistill.teachers",
    "Results": "tracedistill.report",
    "Run": "tracedistill.experiment",
    "SCHEMA_VERSION": "tracedistill.records",
    "Sampler": "tracedistill.evaluation",
    "SamplingParams": "tracedistill.records",
    "Score": "tracedistill.report",
    "StdioCase": "tracedistill.records",
    "StoreStats": "tracedistill.store",
    "TaskKind": "tracedistill.records",
    "Teacher": "tracedistill.teachers",
    "TinkerSampler": "tracedistill.clients.tinker",
    "TinkerTeacher": "tracedistill.teachers.tinker",
    "TinkerTrainer": "tracedistill.training.tinker",
    "TokenUsage": "tracedistill.records",
    "Trace": "tracedistill.records",
    "TraceDistillError": "tracedistill.errors",
    "TraceFilter": "tracedistill.store",
    "TraceStore": "tracedistill.store",
    "TrainConfig": "tracedistill.training",
    "Trainer": "tracedistill.training",
    "TrainingResult": "tracedistill.training",
    "Verdict": "tracedistill.records",
    "VerdictReason": "tracedistill.records",
    "__version__": "tracedistill._version",
    "Verifier": "tracedistill.verifiers",
    "apps": "tracedistill.problems",
    "code_contests": "tracedistill.problems",
    "codeforces": "tracedistill.problems",
    "custom_benchmark": "tracedistill.evaluation",
    "generate": "tracedistill.teachers",
    "greedy": "tracedistill.evaluation",
    "math500": "tracedistill.evaluation",
    "mbpp": "tracedistill.problems",
    "mbpp_plus": "tracedistill.evaluation",
    "numina_math": "tracedistill.problems",
    "open_code_reasoning": "tracedistill.problems",
    "openr1_math": "tracedistill.problems",
    "request_key": "tracedistill.records",
    "taco": "tracedistill.problems",
}

__all__ = [
    "SCHEMA_VERSION",
    "AnthropicClient",
    "AnthropicTeacher",
    "Benchmark",
    "Checkpoint",
    "ClientTeacher",
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


def _renamed(name: str) -> Any:
    if name == "TrainingRun":  # renamed TrainingResult; kept (deprecated) for one release
        from tracedistill import training

        return getattr(training, name)
    raise AttributeError(f"module 'tracedistill' has no attribute {name!r}")


if not TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.attach(__name__, _EXPORTS, globals(), _renamed)
