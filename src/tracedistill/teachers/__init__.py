"""Teachers: models (or datasets) that answer problems with reasoning traces.

:func:`generate` streams problems through a :class:`Teacher` into a trace store with bounded
concurrency, rate limits, retries by error class, a hard budget and resume. Backends:
:class:`OpenAICompatTeacher` (and the :func:`OpenRouterTeacher` preset),
:class:`AnthropicTeacher`, :class:`TinkerTeacher`, :class:`ReplayTeacher`, and
:class:`ClientTeacher` over any model client.
:func:`generate_batch` does the same through OpenAI's and Anthropic's batch APIs.
"""

from typing import TYPE_CHECKING

from tracedistill import _lazy
from tracedistill.clients.http import default_transport
from tracedistill.clients.ratelimit import RateLimiter, RateLimits
from tracedistill.clients.retry import RetryPolicy
from tracedistill.prompts import (
    CODE_PROMPT,
    DEFAULT_PROMPTS,
    MATH_PROMPT,
    PromptSet,
    PromptTemplate,
)
from tracedistill.teachers.anthropic import AnthropicTeacher
from tracedistill.teachers.base import (
    BatchStatus,
    SupportsBatch,
    Teacher,
    TeacherCompletion,
    TeacherRequest,
)
from tracedistill.teachers.batch import generate_batch
from tracedistill.teachers.client import ClientTeacher
from tracedistill.teachers.cost import Budget, Pricing
from tracedistill.teachers.engine import GenerationSummary, generate
from tracedistill.teachers.http import HttpTeacher
from tracedistill.teachers.openai_compat import OpenAICompatTeacher, OpenRouterTeacher
from tracedistill.teachers.replay import ReplayLayout, ReplayTeacher
from tracedistill.teachers.tinker import TinkerTeacher

__all__ = [
    "CODE_PROMPT",
    "DEFAULT_PROMPTS",
    "MATH_PROMPT",
    "AnthropicTeacher",
    "BatchStatus",
    "Budget",
    "ClientTeacher",
    "GenerationSummary",
    "HttpTeacher",
    "OpenAICompatTeacher",
    "OpenRouterTeacher",
    "Pricing",
    "PromptSet",
    "PromptTemplate",
    "RateLimiter",
    "RateLimits",
    "ReplayLayout",
    "ReplayTeacher",
    "RetryPolicy",
    "SupportsBatch",
    "Teacher",
    "TeacherCompletion",
    "TeacherRequest",
    "TinkerTeacher",
    "default_transport",
    "generate",
    "generate_batch",
]

if TYPE_CHECKING:
    from tracedistill.teachers.base import Completion as Completion  # deprecated
else:  # each use of an old name warns (kept one release)
    __getattr__ = _lazy.deprecated(
        __name__, {"Completion": "tracedistill.teachers.base.TeacherCompletion"}
    )
