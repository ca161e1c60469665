"""The sampler interface, now :mod:`tracedistill.clients.base` (this path is kept one release)."""

from tracedistill.clients.base import (
    Completion,
    ModelClient,
    Prompt,
    Sampler,
    SamplerError,
    greedy,
    prompt_text,
)

__all__ = [
    "Completion",
    "ModelClient",
    "Prompt",
    "Sampler",
    "SamplerError",
    "greedy",
    "prompt_text",
]
