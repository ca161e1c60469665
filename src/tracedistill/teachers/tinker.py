"""Tinker sampling as a teacher: any model Tinker serves (or a Tinker-API server you run).

The teacher holds a :class:`~tracedistill.clients.tinker.TinkerSampler` (its ``client``) and each
attempt is one ``client.reply``: prompts are rendered to tokens with the shared chat renderer
(:mod:`tracedistill.chat`), sampled through the tinker SDK, and the sampled tokens parsed back into
reasoning (the ``<think>`` block) and answer. The teacher adds prompts, request keys, retries with
rate limiting, cost and traces, as every teacher does.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from tracedistill._secrets import Secret
from tracedistill.chat import ChatFormat, ChatRenderer
from tracedistill.clients.tinker import LiveSamplerLimit, TinkerConnection, TinkerSampler
from tracedistill.errors import CheckpointError, ConfigurationError
from tracedistill.records import SamplingParams
from tracedistill.teachers.base import Observer, Teacher, TeacherCompletion, TeacherRequest

__all__ = ["TinkerTeacher"]

DEFAULT_PARAMS = SamplingParams(max_tokens=8192, temperature=1.0)


class TinkerTeacher(Teacher):
    """A teacher sampled on Tinker through the tinker SDK.

    Args:
        base_model: the model Tinker serves (e.g. ``Qwen/Qwen3-235B-A22B-Instruct-2507``).
        model_path: sample these sampler weights (``tinker://.../sampler_weights/...``)
            instead of the base model.
        renderer: the chat renderer for the teacher's chat format (default: ``chat_format``
            with the base model's tokenizer, found offline by :func:`load_tokenizer`). It must
            match the teacher model's own chat template.
        chat_format: the chat format when no renderer is given.
        tokenizer: a tokenizer source for :func:`load_tokenizer` (default: ``base_model``).
        service_client: a ``tinker.ServiceClient`` (default: one built from ``base_url`` and
            ``api_key``).
        base_url: the Tinker API root (default: ``TINKER_BASE_URL`` or the SDK's default).
        api_key: the key (default: ``TINKER_API_KEY``).
        params: sampling parameters.
        start_timeout_s: the limit on one attempt at creating the sampling client.
        live_samplers: the bound on live sampler-weights paths that ``model_path`` counts
            against (default: the process-wide one; a base model takes no slot).
        **kwargs: :class:`~tracedistill.teachers.base.Teacher` arguments (name, prompts,
            pricing, retry, timeout).

    Attributes:
        client: the :class:`~tracedistill.clients.tinker.TinkerSampler` the teacher samples
            through (closed with the teacher).
    """

    def __init__(
        self,
        base_model: str,
        *,
        model_path: str | None = None,
        renderer: ChatRenderer | None = None,
        chat_format: ChatFormat | str = ChatFormat.QWEN3,
        tokenizer: Any = None,
        service_client: Any = None,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        params: SamplingParams | None = None,
        start_timeout_s: float = 300.0,
        live_samplers: LiveSamplerLimit | None = None,
        **kwargs: Any,
    ) -> None:
        if model_path is not None and "/weights/" in model_path:
            raise ConfigurationError(
                f"{model_path} is a training-state path; sample its sampler weights "
                f"(tinker://.../sampler_weights/...) instead"
            )
        super().__init__(model=model_path or base_model, params=params or DEFAULT_PARAMS, **kwargs)
        self.base_model = base_model
        self.model_path = model_path
        try:
            self.client = TinkerSampler(
                model_path,
                base_model=base_model,
                renderer=renderer,
                chat_format=chat_format,
                tokenizer=tokenizer,
                service_client=service_client,
                base_url=base_url,
                api_key=api_key,
                live_samplers=live_samplers,
                start_timeout_s=start_timeout_s,
                retry=self.retry,  # a transient start failure is retried like any attempt
            )
        except CheckpointError as exc:  # a teacher's model path is configuration
            raise ConfigurationError(str(exc)) from None
        self.client.label = self.name

    @property
    def connection(self) -> TinkerConnection:
        """The service session, renderer and SDK arguments the client samples through."""
        return self.client.connection

    @property
    def chat_format(self) -> ChatFormat:
        """The chat format asked for (the renderer's, when one was given, may differ)."""
        return self.client.chat_format

    @property
    def start_timeout_s(self) -> float:
        """The limit on one attempt at creating the sampling client."""
        return self.client.start_timeout_s

    @start_timeout_s.setter
    def start_timeout_s(self, value: float) -> None:
        self.client.start_timeout_s = value

    def describe(self) -> Mapping[str, Any]:
        """A JSON-compatible description (no secret)."""
        return {
            **super().describe(),
            "base_model": self.base_model,
            "chat_format": str(self.client.renderer_format),
        }

    async def start(self) -> None:
        """Build the renderer and create the sampling client (once; later calls return).

        Raises:
            ProviderError: the client could not be created (see
                :meth:`~tracedistill.clients.tinker.TinkerSampler.open`): fatal when the
                failure will not pass (rejected key, unknown model or path), so a run stops at
                once; retryable when it may (a timeout, 429, 5xx), and fatal after the retry
                policy's attempts in a row.
        """
        await self.client.open()

    async def complete(
        self, request: TeacherRequest, *, observe: Observer | None = None
    ) -> TeacherCompletion:
        """One attempt: the client's reply to the request's messages and parameters."""
        return await self.client.reply(
            request.messages, request.params or DEFAULT_PARAMS, observe=observe
        )

    def parse(self, response: Any, prompt_tokens: int) -> TeacherCompletion:
        """Turn an SDK sample response into a :class:`TeacherCompletion` (deprecated: use
        ``teacher.client.reply_of``; kept for one release).
        """
        warnings.warn(
            "TinkerTeacher.parse is deprecated: use teacher.client.reply_of(messages, params, "
            "response, prompt_tokens)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.client.reply_of((), self.params or DEFAULT_PARAMS, response, prompt_tokens)

    async def aclose(self) -> None:
        """Close the client: drop the sampling client, its live-sampler slot and any start
        failure, and end the service session it opened (idempotent).
        """
        await self.client.aclose()
