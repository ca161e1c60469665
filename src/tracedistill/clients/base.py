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
from tracedistill.records import (
    THINK_CLOSE,
    THINK_OPEN,
    Completion,
    FinishReason,
    Message,
    ReasoningKind,
    SamplingParams,
    TokenUsage,
)
from tracedistill.records.base import trusted_maker

__all__ = [
    "Completion",
    "ModelClient",
    "Observer",
    "Prompt",
    "Reply",
    "Sampler",
    "SamplerError",
    "cut_at_stop",
    "cut_completion",
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


@attrs.frozen(slots=True, kw_only=True)
class Reply:
    """A provider's answer to one request, normalized: reasoning and answer apart.

    What the provider parsers of this folder return. A teacher stores it as a trace (it is the
    teachers' ``TeacherCompletion``); a model client joins it into a :class:`Completion`
    (:meth:`completion`).

    Attributes:
        reasoning: the reasoning (separate fields, thinking blocks or an inline ``<think>``
            block), empty if none.
        answer: the visible answer.
        reasoning_kind: whether ``reasoning`` is the raw chain of thought or a summary.
        finish_reason: why generation stopped.
        usage: the token counts the provider reported (zero when it did not say).
        cost_usd: the provider's own cost figure in USD, when it reports one.
        metadata: what else the response said (served model, response id, native finish
            reason, redacted thinking blocks).
    """

    reasoning: str = ""
    answer: str = ""
    reasoning_kind: ReasoningKind = ReasoningKind.RAW
    finish_reason: FinishReason = FinishReason.STOP
    usage: TokenUsage = attrs.field(factory=TokenUsage)
    cost_usd: float | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)

    def completion(self, *, include_reasoning: bool = True) -> Completion:
        """The whole assistant turn as one text: the reasoning (when kept) as a ``<think>``
        block in front of the answer, with the reported token counts (None when not reported).
        """
        text = self.answer
        if include_reasoning and self.reasoning:
            text = f"{THINK_OPEN}\n{self.reasoning}\n{THINK_CLOSE}\n\n{text}"
        usage = self.usage
        return Completion(
            text=text,
            finish_reason=self.finish_reason,
            prompt_tokens=usage.prompt_tokens or None,
            completion_tokens=usage.completion_tokens or None,
        )


_MAKE_REPLY = trusted_maker(Reply)


def _trusted_reply(
    reasoning: str,
    answer: str,
    reasoning_kind: ReasoningKind,
    finish_reason: FinishReason,
    usage: TokenUsage,
    cost_usd: float | None,
    metadata: dict[str, Any],
) -> Reply:
    """The :class:`Reply` of these fields, as ``Reply(...)`` builds it (the record has no
    validators), without attrs' keyword handling and per-field ``object.__setattr__``.

    For this folder's parsers, which build one per response with every field already of its
    type: the constructor cost about twice as many instructions.
    """
    reply: Reply = _MAKE_REPLY(
        reasoning, answer, reasoning_kind, finish_reason, usage, cost_usd, metadata
    )
    return reply


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to its first stop string, and whether one was found.

    For servers that return the stop string (or the text after it) with the completion.
    """
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def cut_completion(completion: Completion, stops: Sequence[str]) -> Completion:
    """``completion`` cut at its first stop string (then it finished with ``STOP``)."""
    text, cut = cut_at_stop(completion.text, stops)
    if not cut:
        return completion
    return attrs.evolve(completion, text=text, finish_reason=FinishReason.STOP)


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

    Use it as ``async with client:`` or call :meth:`aclose` when done. :meth:`sample` (the
    evaluator's call: the concurrency bound, retries, the completion's text) may be called from
    many tasks at once: at most ``max_concurrency`` requests are in flight, the others wait.
    :meth:`reply` is one attempt returning the parsed :class:`Reply`; the teachers wrap it.

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

    async def reply(
        self, prompt: Prompt, params: SamplingParams | None, *, observe: Observer | None = None
    ) -> Reply:
        """One attempt at ``prompt``: the model's parsed answer, reasoning apart from the answer.

        The primitive under :meth:`sample` and under the teachers (one call per attempt; the
        caller retries, bounds concurrency and rate limits). ``observe`` receives what the
        response's headers say about rate limits (HTTP backends). ``params`` None sends only
        the prompt (the backend's defaults). A backend that implements only :meth:`_sample`
        answers with its completion's text as the answer.

        Raises:
            ProviderError: the attempt failed (its class says whether to retry it).
        """
        if params is None:
            raise ConfigurationError(f"{type(self).__name__} needs sampling params")
        try:
            completion = await self._sample(prompt, params)
        except SamplerError as exc:
            error = ProviderError(str(exc))
            error.fatal = exc.fatal
            raise error from exc
        return Reply(
            answer=completion.text,
            reasoning_kind=ReasoningKind.NONE,
            finish_reason=completion.finish_reason,
            usage=TokenUsage(
                prompt_tokens=completion.prompt_tokens or 0,
                completion_tokens=completion.completion_tokens or 0,
            ),
        )

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
