"""The value records that flow through tracedistill: problems, traces, verdicts, completions.

Every record is a frozen, slotted attrs class validated at construction. Each converts to a plain
JSON-compatible dict with :meth:`to_dict` and back with :meth:`from_dict`; the dict carries
``schema`` (:data:`SCHEMA_VERSION`) so a store written by a later version is recognised instead
of misread.
"""

from tracedistill.records.base import (
    SCHEMA_VERSION,
    FinishReason,
    JSONValue,
    ReasoningKind,
    TaskKind,
    VerdictReason,
    content_hash,
    utcnow,
)
from tracedistill.records.messages import (
    Message,
    SamplingParams,
    request_key,
)
from tracedistill.records.models import (
    Checkpoint,
    Completion,
    SamplerWeights,
    TrainingState,
)
from tracedistill.records.problems import (
    CodeTests,
    FunctionTests,
    Problem,
    StdioCase,
)
from tracedistill.records.traces import (
    THINK_CLOSE,
    THINK_OPEN,
    TokenUsage,
    Trace,
    split_completion,
    trace_from_stored,
)
from tracedistill.records.verdicts import (
    Verdict,
)

__all__ = [
    "SCHEMA_VERSION",
    "THINK_CLOSE",
    "THINK_OPEN",
    "Checkpoint",
    "CodeTests",
    "Completion",
    "FinishReason",
    "FunctionTests",
    "JSONValue",
    "Message",
    "Problem",
    "ReasoningKind",
    "SamplerWeights",
    "SamplingParams",
    "StdioCase",
    "TaskKind",
    "TokenUsage",
    "Trace",
    "TrainingState",
    "Verdict",
    "VerdictReason",
    "content_hash",
    "request_key",
    "split_completion",
    "trace_from_stored",
    "utcnow",
]
