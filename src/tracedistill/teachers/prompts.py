"""Moved to :mod:`tracedistill.prompts` (this path is kept one release)."""

from tracedistill.prompts import (
    CODE_PROMPT,
    DEFAULT_PROMPTS,
    MATH_PROMPT,
    PromptSet,
    PromptTemplate,
)

__all__ = [
    "CODE_PROMPT",
    "DEFAULT_PROMPTS",
    "MATH_PROMPT",
    "PromptSet",
    "PromptTemplate",
]
