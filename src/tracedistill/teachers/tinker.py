"""Tinker sampling as a teacher: any model Tinker serves (or a Tinker-API server you run).

Prompts are rendered to tokens with the shared chat renderer (:mod:`tracedistill.chat`), sampled
through the tinker SDK, and the sampled tokens are parsed back into reasoning (the ``<think>``
block) and answer. The SDK's first call does blocking HTTP with long internal retries, so the
sampling client is created in a worker thread under a time limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import anyio.to_thread

from tracedistill._secrets import Secret
from tracedistill._tinker import (
    chat_stop,
    resolve_future,
    tinker_sampling_params,
)
from tracedistill.chat import ChatFormat, ChatRenderer
from tracedistill.clients.tinker import TinkerConnection, read_sample, tinker_error
from tracedistill.errors import (
    ConfigurationError,
    ProviderError,
    ProviderUnavailableError,
)
from tracedistill.records import (
    ReasoningKind,
    SamplingParams,
    TokenUsage,
    split_completion,
)
from tracedistill.teachers.base import Observer, Teacher, TeacherCompletion, TeacherRequest

__all__ = ["TinkerTeacher"]

DEFAULT_PARAMS = SamplingParams(max_tokens=8192, temperature=1.0)


def _provider_error(exc: BaseException, what: str) -> ProviderError:
    """The provider error an SDK exception stands for (unknown ones are retryable)."""
    error = tinker_error(exc, what)
    return error or ProviderUnavailableError(f"{what}: {type(exc).__name__}: {exc!s:.300}")


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
        start_timeout_s: the limit on creating the sampling client.
        **kwargs: :class:`~tracedistill.teachers.base.Teacher` arguments (name, prompts,
            pricing, retry, timeout).
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
        self.connection = TinkerConnection(
            base_model=base_model,
            model_path=model_path,
            renderer=renderer,
            chat_format=chat_format,
            tokenizer=tokenizer,
            service_client=service_client,
            base_url=base_url,
            api_key=api_key,
        )
        self.chat_format = self.connection.chat_format
        self.start_timeout_s = start_timeout_s
        self._client: Any = None
        self._start_lock: anyio.Lock | None = None
        self._start_error: ProviderError | None = None

    def describe(self) -> Mapping[str, Any]:
        """A JSON-compatible description (no secret)."""
        return {
            **super().describe(),
            "base_model": self.base_model,
            "chat_format": str(self.connection.renderer_format),
        }

    # --- start ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the renderer and create the sampling client (once; later calls return).

        Raises:
            ProviderError: the client could not be created; fatal, so a run stops at once
                instead of every request waiting out the SDK's retries.
        """
        if self._start_lock is None:
            self._start_lock = anyio.Lock()
        async with self._start_lock:
            if self._client is not None:
                return
            if self._start_error is not None:
                raise self._start_error  # requests queued behind a failed start fail the same
            await self.connection.load_renderer()
            try:
                client = await self.connection.create_client(self.start_timeout_s)
            except TimeoutError:
                error: ProviderError = ProviderUnavailableError(
                    f"{self.name}: no Tinker sampling client for {self.model} after "
                    f"{self.start_timeout_s:g}s (is the Tinker service reachable?)"
                )
            except Exception as exc:
                error = _provider_error(exc, f"{self.name}: cannot sample {self.model}")
            else:
                self._client = client
                return
            error.fatal = True  # every later request would fail the same way
            self._start_error = error
            raise error

    # --- one attempt ---------------------------------------------------------------------------

    def _prepare(self, request: TeacherRequest) -> tuple[list[int], Any]:

        renderer = self.connection.renderer
        if renderer is None:
            raise RuntimeError("TinkerTeacher used before start()")
        generation = renderer.generation_prompt(request.messages)
        params = request.params or DEFAULT_PARAMS
        sampling = tinker_sampling_params(params, chat_stop(params, generation))
        return list(generation.tokens), sampling

    async def complete(
        self, request: TeacherRequest, *, observe: Observer | None = None
    ) -> TeacherCompletion:
        """Sample one completion for ``request`` on Tinker."""
        import tinker

        await self.start()
        tokens, sampling = await anyio.to_thread.run_sync(self._prepare, request)
        try:
            response = await resolve_future(
                self._client.sample(
                    prompt=tinker.types.ModelInput.from_ints(tokens),
                    num_samples=1,
                    sampling_params=sampling,
                )
            )
        except Exception as exc:
            raise _provider_error(exc, f"{self.name}: sample {self.model}") from None
        return await anyio.to_thread.run_sync(self.parse, response, len(tokens))

    def parse(self, response: Any, prompt_tokens: int) -> TeacherCompletion:
        """Turn an SDK sample response into a :class:`TeacherCompletion`."""
        renderer = self.connection.renderer
        if renderer is None:
            raise RuntimeError("TinkerTeacher used before start()")
        text, finish, out = read_sample(renderer, response, what=self.name)
        reasoning, answer = split_completion(text)
        return TeacherCompletion(
            reasoning=reasoning,
            answer=answer,
            reasoning_kind=ReasoningKind.RAW if reasoning else ReasoningKind.NONE,
            finish_reason=finish,
            usage=TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=out),
        )

    async def aclose(self) -> None:
        """Drop the sampling client and any start failure, and end the service session the
        teacher opened (idempotent).
        """
        self._client = None
        self._start_error = None
        await self.connection.aclose()
