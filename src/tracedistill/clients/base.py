"""The model-client interface: a prompt (chat messages or raw text) in, a completion out.

Every backend (an OpenAI-compatible server, Tinker, a local transformers model) answers the
same call, greedy by default, with ``max_tokens`` always given and its concurrency bounded by
the client itself, so the evaluator can send every problem at once. Evaluation samples through
a :class:`ModelClient` directly (it calls it a sampler: :data:`Sampler` is the same class).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeAlias

import anyio
import attrs

from tracedistill.clients.ratelimit import RateInfo
from tracedistill.errors import ConfigurationError, EvaluationError, ProviderError
from tracedistill.records import Completion, Message, SamplingParams

__all__ = [
    "Completion",
    "ModelClient",
    "Observer",
    "Prompt",
    "Sampler",
    "SamplerError",
    "greedy",
    "prompt_text",
]

log = logging.getLogger(__name__)

#: Called with what each response's headers say about rate limits.
Observer = Callable[[RateInfo], None]

#: What a sampler is asked to continue: chat messages (rendered by the backend's chat format)
#: or raw text (completion-style prompts for base models).
Prompt: TypeAlias = Sequence[Message] | str


class SamplerError(EvaluationError):
    """A sampler could not produce a completion for a prompt (after its retries).

    Attributes:
        fatal: the failure will repeat for every prompt (bad credentials, a wrong model or
            checkpoint path): the evaluation stops instead of trying the next prompts.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def greedy(max_tokens: int, *, stop: Sequence[str] = (), **extra: Any) -> SamplingParams:
    """Greedy decoding parameters: ``temperature=0.0`` and ``top_k=1``.

    ``top_k=1`` is sent as well because some servers were seen to treat ``temperature=0`` as
    "use the default temperature".
    """
    return SamplingParams(
        max_tokens=max_tokens, temperature=0.0, top_k=1, stop=tuple(stop), extra=extra
    )


def prompt_text(prompt: Prompt) -> str:
    """A readable one-string form of a prompt (for logs and request keys)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.role}: {m.content}" for m in prompt)


def _check_params(params: SamplingParams) -> None:
    if not isinstance(params, SamplingParams):
        raise ConfigurationError(
            f"sampling params must be a SamplingParams (max_tokens is required), got "
            f"{type(params).__name__}; use tracedistill.evaluation.greedy(max_tokens)"
        )


class ModelClient(abc.ABC):
    """Samples completions from one model (a base model or a checkpoint).

    Use it as ``async with client:`` or call :meth:`aclose` when done. :meth:`sample` may be
    called from many tasks at once: at most ``max_concurrency`` requests are in flight, the
    others wait.

    Attributes:
        name: the backend (``openai``, ``tinker``, ``local``).
        model: what is sampled: a model name, a checkpoint path or an adapter directory.
    """

    name: str = "sampler"
    model: str

    def __init__(self, *, max_concurrency: int) -> None:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigurationError(
                f"max_concurrency must be an int >= 1, got {max_concurrency!r}"
            )
        self.max_concurrency = max_concurrency
        self._limiter: anyio.CapacityLimiter | None = None

    def _get_limiter(self) -> anyio.CapacityLimiter:
        # Created on first use, inside the running event loop.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        return self._limiter

    async def sample(self, prompt: Prompt, params: SamplingParams) -> Completion:
        """Complete one prompt (chat messages or raw text) with ``params``.

        Raises:
            SamplerError: no completion could be produced (``fatal`` says whether any other
                prompt can succeed).
        """
        _check_params(params)
        if not isinstance(prompt, str):
            prompt = tuple(m if isinstance(m, Message) else Message.from_dict(m) for m in prompt)
            if not prompt:
                raise ConfigurationError("a chat prompt needs at least one message")
        async with self._get_limiter():
            start = time.monotonic()
            try:
                completion = await self._sample(prompt, params)
            except SamplerError:
                raise
            except ProviderError as exc:
                raise SamplerError(f"{self.name} {self.model}: {exc}", fatal=exc.fatal) from exc
            if completion.latency_s == 0.0:
                completion = attrs.evolve(completion, latency_s=time.monotonic() - start)
            return completion

    async def complete(
        self,
        messages: Prompt,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        **extra: Any,
    ) -> Completion:
        """Complete ``messages`` (greedy unless ``temperature`` is above 0).

        ``extra`` holds backend-specific request fields. Same errors as :meth:`sample`.
        """
        if temperature == 0.0:
            params = greedy(max_tokens, stop=stop, **extra)
        else:
            params = SamplingParams(
                max_tokens=max_tokens, temperature=temperature, stop=tuple(stop), extra=extra
            )
        return await self.sample(messages, params)

    @abc.abstractmethod
    async def _sample(self, prompt: Prompt, params: SamplingParams) -> Completion:
        """Produce one completion (concurrency is already bounded by :meth:`sample`)."""

    def describe(self) -> Mapping[str, Any]:
        """What identifies this sampler in a stored evaluation (no secrets)."""
        return {"backend": self.name, "model": self.model}

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (connections, a model, a remote sampler) now instead of lazily."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (idempotent)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"


#: The name evaluation gives a model client (same class).
Sampler = ModelClient
