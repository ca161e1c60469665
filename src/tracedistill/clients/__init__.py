"""Talking to models: one primitive, messages in and a completion out, and what it rests on.

:class:`ModelClient` is the interface (evaluation calls it a sampler); its backends are
:class:`OpenAICompatibleSampler` (any OpenAI-compatible server), :class:`AnthropicClient`
(Anthropic's Messages API),
:class:`~tracedistill.clients.tinker.TinkerSampler` and
:class:`~tracedistill.clients.local.LocalSampler` (imported from their modules: they load the
tinker SDK and torch). Below them: the HTTP transport (:mod:`~tracedistill.clients.http`),
retries by error class (:mod:`~tracedistill.clients.retry`), rate limiting
(:mod:`~tracedistill.clients.ratelimit`) and server-sent events
(:mod:`~tracedistill.clients.sse`). The provider parsers (OpenAI-compatible, Anthropic) live
here once: the clients and the teachers read answers with them.
"""

from tracedistill.clients.anthropic import AnthropicClient
from tracedistill.clients.base import ModelClient, Observer, Prompt, Reply, SamplerError, greedy
from tracedistill.clients.http import HttpClient, default_transport
from tracedistill.clients.openai_compat import OpenAICompatibleSampler
from tracedistill.clients.ratelimit import RateInfo, RateLimiter, RateLimits
from tracedistill.clients.remote import RemoteModelClient
from tracedistill.clients.retry import RetryPolicy

__all__ = [
    "AnthropicClient",
    "HttpClient",
    "ModelClient",
    "Observer",
    "OpenAICompatibleSampler",
    "Prompt",
    "RateInfo",
    "RateLimiter",
    "RateLimits",
    "RemoteModelClient",
    "Reply",
    "RetryPolicy",
    "SamplerError",
    "default_transport",
    "greedy",
]
