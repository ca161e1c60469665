"""Moved to :mod:`tracedistill.clients.openai_compat` (this path is kept one release)."""

from tracedistill.clients.openai_compat import OpenAICompatibleSampler

__all__ = ["OpenAICompatibleSampler"]
