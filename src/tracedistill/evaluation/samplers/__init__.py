"""Picking a sampler for what is evaluated: :func:`make_sampler`.

The sampler backends themselves live in :mod:`tracedistill.clients` (OpenAI-compatible servers,
Anthropic, Tinker, local transformers models); their old paths here are kept one release and warn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracedistill import _lazy
from tracedistill.clients.base import Sampler
from tracedistill.errors import ConfigurationError
from tracedistill.records import Checkpoint, SamplerWeights

if TYPE_CHECKING:  # moved to tracedistill.clients (kept one release; each use warns)
    from tracedistill.clients.anthropic import AnthropicClient as AnthropicClient
    from tracedistill.clients.openai_compat import (
        OpenAICompatibleSampler as OpenAICompatibleSampler,
    )
else:
    __getattr__ = _lazy.deprecated(
        __name__,
        {
            "AnthropicClient": "tracedistill.clients.anthropic.AnthropicClient",
            "OpenAICompatibleSampler": "tracedistill.clients.openai_compat.OpenAICompatibleSampler",
        },
    )

__all__ = ["make_sampler"]


def make_sampler(model: Any, **kwargs: Any) -> Sampler:
    """A sampler for a checkpoint, sampler weights or a path, on the backend it belongs to.

    - a :class:`Sampler`: returned as is;
    - a training :class:`~tracedistill.training.Checkpoint` or :class:`SamplerWeights`, or a
      ``tinker://.../sampler_weights/...`` string: a :class:`TinkerSampler` for Tinker paths,
      a :class:`LocalSampler` for a local adapter directory;
    - a local directory holding ``adapter_config.json`` (a PEFT adapter) or ``config.json``
      (a model): a :class:`LocalSampler`.

    ``kwargs`` go to the sampler's constructor (e.g. ``chat_format``, ``max_concurrency``).
    To sample a base model on Tinker or a served model, build the sampler yourself.

    Raises:
        CheckpointError: a ``tinker://.../weights/...`` (training state) path.
        ConfigurationError: nothing known to sample.
    """
    if isinstance(model, Sampler):
        return model
    base_model = kwargs.pop("base_model", None)
    if isinstance(model, Checkpoint):
        if model.sampler is None:
            raise ConfigurationError(
                f"checkpoint at step {model.step} has no sampler weights to evaluate"
            )
        base_model = base_model or model.base_model or None
        model = model.sampler
    if isinstance(model, str) and model.startswith("tinker://"):
        model = SamplerWeights(model)  # a weights/ path fails here, with the fix in the message
    if isinstance(model, SamplerWeights) and model.is_tinker:
        from tracedistill.clients.tinker import TinkerSampler

        return TinkerSampler(model, base_model=base_model, **kwargs)
    path = Path(str(model.path if isinstance(model, SamplerWeights) else model)).expanduser()
    if (path / "adapter_config.json").is_file():
        from tracedistill.clients.local import LocalSampler

        return LocalSampler(base_model, adapter=path, **kwargs)
    if (path / "config.json").is_file():
        from tracedistill.clients.local import LocalSampler

        return LocalSampler(path, **kwargs)
    raise ConfigurationError(
        f"cannot tell how to sample {model!r}: give a Sampler, a training Checkpoint, a "
        "tinker://.../sampler_weights/... path or a local model or adapter directory"
    )
