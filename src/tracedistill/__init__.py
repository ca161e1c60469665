"""tracedistill: reasoning-trace distillation as an async, typed library.

Generate reasoning traces from teacher models, verify them, fine-tune a student on the correct
ones, evaluate every checkpoint and report the study. The public names live here; the modules
behind them are private unless documented.
"""

from tracedistill._version import __version__
from tracedistill.errors import TraceDistillError
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
from tracedistill.store import (
    Durability,
    JsonlTraceStore,
    StoreStats,
    TraceFilter,
    TraceStore,
)

__all__ = [
    "SCHEMA_VERSION",
    "CodeTests",
    "Durability",
    "FinishReason",
    "FunctionTests",
    "JsonlTraceStore",
    "Message",
    "Problem",
    "ReasoningKind",
    "SamplingParams",
    "StdioCase",
    "StoreStats",
    "TaskKind",
    "TokenUsage",
    "Trace",
    "TraceDistillError",
    "TraceFilter",
    "TraceStore",
    "Verdict",
    "VerdictReason",
    "__version__",
    "request_key",
]
