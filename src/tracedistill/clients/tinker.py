"""A sampler on Tinker (or any server that speaks the Tinker API): checkpoints or base models.

Prompts are rendered by the chat renderer shared with training (:mod:`tracedistill.chat`), so a
checkpoint is sampled on exactly the token sequence it was trained to continue. Greedy is sent as
``temperature=0.0, top_k=1``. The SDK's first call does blocking HTTP with long retries, so the
sampling client is created in a worker thread under a time limit, and prompts are rendered and
responses parsed in worker threads too: the event loop never blocks on the tinker SDK or the
tokenizer. Tinker bounds how many LoRA adapters are served at once, so the number of sampler-weights
paths sampled at once in the process is bounded (:class:`LiveSamplerLimit`).

:class:`TinkerSampler` is the evaluator's sampler and, through :meth:`TinkerSampler.reply`, the
client :class:`~tracedistill.teachers.TinkerTeacher` holds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import anyio

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.chat import ChatFormat, ChatRenderer, load_tokenizer
from tracedistill.clients._tinker import (
    chat_stop,
    create_sampling_client,
    new_service_client,
    resolve_future,
    served_models,
    tinker_sampling_params,
)
from tracedistill.clients.base import (
    Completion,
    Observer,
    Prompt,
    Reply,
    Sampler,
    SamplerError,
    cut_at_stop,
)
from tracedistill.clients.retry import RetryPolicy, error_for_status, retry_call
from tracedistill.errors import (
    CheckpointError,
    ConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from tracedistill.records import (
    Checkpoint,
    FinishReason,
    ReasoningKind,
    SamplerWeights,
    SamplingParams,
    TokenUsage,
    split_completion,
)

__all__ = [
    "DEFAULT_LIVE_SAMPLERS",
    "LiveSamplerLimit",
    "TinkerConnection",
    "TinkerSampler",
    "read_sample",
    "tinker_error",
]

log = logging.getLogger(__name__)


class LiveSamplerLimit:
    """A process-wide bound on how many sampler-weights paths are sampled at once.

    A slot stands for one LoRA adapter the service keeps loaded: samplers of the same weights
    path share one slot (the service loads the adapter once), and a slot is freed when the last
    of them closes. A sampler takes its slot when it starts and waits while none is free. A
    slot without a key is one sampler's own. Works across event loops and threads.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ConfigurationError(f"live sampler limit must be >= 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._holders: dict[str, int] = {}  # weights path -> samplers holding its slot
        self._unkeyed = 0
        self.peak = 0

    @property
    def in_use(self) -> int:
        """Slots taken now."""
        return self._unkeyed + len(self._holders)

    def try_acquire(self, key: str | None = None) -> bool:
        """Take a slot (or join ``key``'s, when a sampler of that path holds one) if one is free."""
        with self._lock:
            if key is not None and key in self._holders:
                self._holders[key] += 1
                return True
            if self.in_use >= self.limit:
                return False
            if key is None:
                self._unkeyed += 1
            else:
                self._holders[key] = 1
            self.peak = max(self.peak, self.in_use)
            return True

    async def acquire(self, poll_s: float = 0.05, *, key: str | None = None) -> None:
        """Wait for a free slot (or ``key``'s) and take it."""
        # Polled: an anyio primitive belongs to one event loop, and the slots are shared by
        # samplers on any loop or thread of the process.
        while not self.try_acquire(key):  # noqa: ASYNC110
            await anyio.sleep(poll_s)

    def release(self, key: str | None = None) -> None:
        """Give a slot (or one hold on ``key``'s) back."""
        with self._lock:
            if key is None:
                self._unkeyed = max(0, self._unkeyed - 1)
                return
            left = self._holders.pop(key, 0) - 1
            if left > 0:
                self._holders[key] = left


#: The default bound on live Tinker samplers in one process.
DEFAULT_LIVE_SAMPLERS = LiveSamplerLimit(4)


def _sampler_path(model_path: str | SamplerWeights | Checkpoint | None) -> tuple[str | None, str]:
    """The sampler-weights path to sample, and the base model a checkpoint names."""
    if model_path is None:
        return None, ""
    if isinstance(model_path, Checkpoint):
        if model_path.sampler is None:
            raise CheckpointError(
                f"checkpoint at step {model_path.step} has no sampler weights to sample"
            )
        return model_path.sampler.path, model_path.base_model
    weights = model_path if isinstance(model_path, SamplerWeights) else SamplerWeights(model_path)
    if not weights.is_tinker:
        raise CheckpointError(
            f"{weights.path} is not a Tinker path (tinker://.../sampler_weights/...): sample a "
            "local adapter directory with LocalSampler"
        )
    return weights.path, ""


class TinkerConnection:
    """What a Tinker sampling client is made from, and making it (shared by the sampler and
    :class:`~tracedistill.teachers.TinkerTeacher`).

    The chat renderer is built and the client created in worker threads: the tokenizer load and
    the SDK's first call block.

    Args:
        base_model: the base model (its tokenizer renders prompts unless ``tokenizer`` says).
        model_path: the sampler weights to sample, or None for ``base_model`` itself.
        renderer: a ready chat renderer (default: built from ``chat_format`` and the tokenizer).
        chat_format: the chat format when no renderer is given.
        tokenizer: a tokenizer source for :func:`load_tokenizer` (default: ``base_model``).
        service_client: a ``tinker.ServiceClient`` (default: one built from ``base_url`` and
            ``api_key``).
        base_url: the Tinker API root (default: ``TINKER_BASE_URL`` or the SDK's default).
        api_key: the key (default: ``TINKER_API_KEY``).
    """

    def __init__(
        self,
        *,
        base_model: str | None,
        model_path: str | None,
        renderer: ChatRenderer | None = None,
        chat_format: ChatFormat | str = ChatFormat.QWEN3,
        tokenizer: Any = None,
        service_client: Any = None,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
    ) -> None:
        self.base_model = base_model
        self.model_path = model_path
        self.chat_format = ChatFormat(chat_format)
        self.renderer = renderer
        self.service = service_client
        #: whether :attr:`service` was built here (and so is this connection's to close)
        self.own_service = False
        self._tokenizer_source = tokenizer
        self._base_url = base_url
        self._api_key = resolve_secret(api_key, "TINKER_API_KEY")

    @property
    def renderer_format(self) -> ChatFormat:
        """The chat format prompts are rendered in."""
        return self.renderer.format if self.renderer is not None else self.chat_format

    async def load_renderer(self) -> ChatRenderer:
        """The chat renderer, built in a worker thread on first use."""
        if self.renderer is None:
            self.renderer = await anyio.to_thread.run_sync(self._build_renderer)
        return self.renderer

    def _build_renderer(self) -> ChatRenderer:
        source = self._tokenizer_source if self._tokenizer_source is not None else self.base_model
        return ChatRenderer(load_tokenizer(source), self.chat_format)

    async def create_client(self, timeout_s: float) -> Any:
        """A new sampling client, created in a worker thread.

        Raises:
            TimeoutError: not created within ``timeout_s`` seconds.
            Exception: what the SDK raised (see :func:`tinker_error`).
        """
        with anyio.fail_after(timeout_s):
            return await anyio.to_thread.run_sync(self._create_client, abandon_on_cancel=True)

    def _create_client(self) -> Any:
        if self.service is None:
            # Kept before the client is asked for, so a failed start still ends the session.
            self.service = new_service_client(base_url=self._base_url, api_key=self._api_key)
            self.own_service = True
        served = None
        if self.own_service and self.model_path is None:
            # Where the service is this connection's, its address and key are known: ask what
            # it serves. (A caller's own service_client is taken as it is.)
            served = served_models(base_url=self._base_url, api_key=self._api_key)
        return create_sampling_client(
            self.service, model_path=self.model_path, base_model=self.base_model, served=served
        )

    async def aclose(self) -> None:
        """End the service session this connection opened, if any (idempotent)."""
        service, own = self.service, self.own_service
        if own and service is not None:
            self.service, self.own_service = None, False

            def close() -> None:
                service.close("success").result()

            # Closing only ends the session's heartbeats: never let it hold up the caller.
            with anyio.move_on_after(10, shield=True), contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(close, abandon_on_cancel=True)


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status of ``exc`` or of the API error it was raised from.

    The SDK's futures raise a ``ValueError`` from the API error once their own retries are
    spent (a 400 on a sample: "Error retrieving result: ... (status 400)").
    """
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        status = getattr(seen, "status_code", None)
        if isinstance(status, int) and status > 0:
            return status
        seen = seen.__cause__
    return None


def tinker_error(exc: BaseException, what: str) -> ProviderError | None:
    """The provider error a tinker SDK exception stands for (None: not an API error)."""
    status = _status_of(exc)
    message = f"{what}: {type(exc).__name__}: {exc!s:.300}"
    if isinstance(status, int):
        message = f"{what}: HTTP {status}: {type(exc).__name__}: {exc!s:.300}"
        return error_for_status(status, message, provider_message=str(exc)[:500])
    name = type(exc).__name__
    if "Timeout" in name:
        return ProviderTimeoutError(message)
    if "Connection" in name:
        return ProviderUnavailableError(message)
    return None


def _again(error: ProviderError, message: str | None = None) -> ProviderError:
    """A new error like ``error`` (with ``message``, if given), for another caller to raise:
    one exception object is raised by one task.
    """
    copy = type(error)(
        str(error) if message is None else message,
        status=error.status,
        provider_message=error.provider_message,
        retry_after=error.retry_after,
    )
    copy.fatal = error.fatal
    return copy


class _StartFailures:
    """The failed attempts at creating a sampling client, and what callers are told meanwhile.

    A permanent failure (credentials rejected, an unknown model or weights path, an SDK error
    that is not an API error) is fatal and kept until the sampler closes: every request would
    fail the same way, so none tries again. A transient one (timeout, 429, 5xx, connection) is
    retryable and kept only for the shortest back-off ``policy`` gives after it: callers
    queued behind the failed start fail at once instead of each waiting out another start, and
    the first caller after the back-off tries again. ``policy.max_attempts`` transient failures
    in a row make the failure permanent, so an unreachable service stops a run instead of being
    retried forever.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.count = 0  # failed attempts in a row
        self.error: ProviderError | None = None
        self.until = 0.0  # time.monotonic() until which a transient failure is answered

    def pending(self) -> ProviderError | None:
        """The failure a caller gets now without trying, if any."""
        error = self.error
        if error is None or (not error.fatal and time.monotonic() >= self.until):
            return None
        return _again(error)

    def record(self, error: ProviderError) -> ProviderError:
        """Note a failed attempt; the error to raise (made fatal when it will not pass)."""
        self.count += 1
        if not error.retryable:
            error.fatal = True  # every later request would fail the same way
        elif not error.fatal and self.count >= self.policy.max_attempts:
            error = _again(
                error, f"{error} (no sampling client after {self.count} attempts in a row)"
            )
            error.fatal = True
        self.error = error
        # The retry loop waits at least this long before its next attempt, so that attempt
        # never finds this failure still standing.
        self.until = time.monotonic() + self.policy.shortest_delay(error.retry_after)
        return error

    def clear(self) -> None:
        """Forget every failure (the client was created, or the sampler closed)."""
        self.count, self.error = 0, None


class TinkerSampler(Sampler):
    """Samples a Tinker checkpoint (``tinker://.../sampler_weights/...``) or a base model.

    Args:
        model_path: the sampler weights (a path, :class:`SamplerWeights` or a training
            :class:`Checkpoint`); None samples ``base_model`` itself. A training-state path
            (``.../weights/...``) is refused with a message saying which path to use.
        base_model: the base model (needed for the tokenizer when ``model_path`` is None or
            the checkpoint does not name it).
        renderer: the chat renderer the student was trained with (default: ``chat_format``
            with the base model's tokenizer, found offline by :func:`load_tokenizer`).
        chat_format: the chat format when no renderer is given.
        tokenizer: a tokenizer source for :func:`load_tokenizer` (default: ``base_model``).
        service_client: a ``tinker.ServiceClient`` (default: one built from ``base_url`` and
            ``api_key``).
        base_url: the Tinker API root (default: ``TINKER_BASE_URL`` or the SDK's default).
        api_key: the key (default: ``TINKER_API_KEY``).
        max_concurrency: requests in flight at once.
        live_samplers: the bound on live sampler-weights paths this one counts against (a
            base model takes no slot).
        start_timeout_s: the limit on one attempt at creating the sampling client.
        retry: how rate-limited or failed requests are retried; also how long a transient
            start failure is answered without trying again, and how many in a row stop.
    """

    name = "tinker"

    def __init__(
        self,
        model_path: str | SamplerWeights | Checkpoint | None = None,
        *,
        base_model: str | None = None,
        renderer: ChatRenderer | None = None,
        chat_format: ChatFormat | str = ChatFormat.QWEN3,
        tokenizer: Any = None,
        service_client: Any = None,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        max_concurrency: int = 32,
        live_samplers: LiveSamplerLimit | None = None,
        start_timeout_s: float = 300.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency)
        path, checkpoint_base = _sampler_path(model_path)
        self.model_path = path
        self.base_model = base_model or checkpoint_base or None
        if self.model_path is None and self.base_model is None:
            raise ConfigurationError("TinkerSampler needs a sampler-weights path or a base_model")
        self.model = self.model_path or str(self.base_model)
        self.connection = TinkerConnection(
            base_model=self.base_model,
            model_path=self.model_path,
            renderer=renderer,
            chat_format=chat_format,
            tokenizer=tokenizer,
            service_client=service_client,
            base_url=base_url,
            api_key=api_key,
        )
        self.chat_format = self.connection.chat_format
        self.live_samplers = live_samplers or DEFAULT_LIVE_SAMPLERS
        self.start_timeout_s = start_timeout_s
        self.retry = retry or RetryPolicy(max_attempts=8, base_delay=2.0)
        #: the name errors are reported under (a teacher sets its own)
        self.label = "tinker"
        self._client: Any = None
        self._holding_slot = False
        self._start_lock: anyio.Lock | None = None
        self._failures = _StartFailures(self.retry)

    def describe(self) -> Mapping[str, Any]:
        """Backend, path, base model and chat format."""
        return {
            "backend": self.name,
            "model": self.model,
            "base_model": self.base_model,
            "chat_format": str(self.renderer_format),
        }

    @property
    def renderer_format(self) -> ChatFormat:
        """The chat format prompts are rendered in."""
        return self.connection.renderer_format

    async def start(self) -> None:
        """Build the renderer, take a live-sampler slot (sampler weights only) and create the
        sampling client (once; later calls return).

        Raises:
            SamplerError: no client; ``fatal`` unless the failure was transient (see
                :meth:`open`).
        """
        try:
            await self.open()
        except ProviderError as exc:
            raise SamplerError(str(exc), fatal=exc.fatal) from exc

    async def open(self) -> None:
        """Create the sampling client if there is none (the renderer and slot first).

        A permanent failure is kept and raised again to every caller until :meth:`aclose`; a
        transient one only for its back-off (then the next caller tries again), and
        ``retry.max_attempts`` of them in a row become permanent.

        Raises:
            ProviderError: no client. Fatal (the run stops) when the failure will not pass:
                rejected credentials, an unknown model or path, a non-API SDK error; else
                retryable (a timeout after ``start_timeout_s``, 429, 5xx, connection errors).
        """
        if self._client is not None:
            return
        if self._start_lock is None:
            self._start_lock = anyio.Lock()
        async with self._start_lock:
            if self._client is None:  # not created while this caller waited for the lock
                await self._open_locked()

    async def _open_locked(self) -> None:
        pending = self._failures.pending()
        if pending is not None:
            raise pending  # queued behind a start that just failed: fail the same
        await self.connection.load_renderer()
        await self._take_slot()
        try:
            self._client = await self._create()
        except ProviderError as exc:
            self._release()
            error = self._failures.record(exc)
            if not error.fatal:
                log.warning("%s; retried after a back-off", error)
            raise error from exc.__cause__
        self._failures.clear()

    async def _take_slot(self) -> None:
        # Only sampler weights are a LoRA adapter the service must keep loaded; a base model's
        # sampling client takes no slot.
        if self.model_path is not None and not self._holding_slot:
            await self.live_samplers.acquire(key=self.model_path)
            self._holding_slot = True

    async def _create(self) -> Any:
        """A new sampling client, an SDK failure as the ProviderError it stands for."""
        what = f"{self.label}: cannot sample {self.model}"
        try:
            return await self.connection.create_client(self.start_timeout_s)
        except ProviderError as exc:  # the service does not serve the model
            raise _again(exc, f"{self.label}: cannot sample {self.model}: {exc}") from None
        except TimeoutError:
            raise ProviderTimeoutError(
                f"{self.label}: no sampling client for {self.model} after "
                f"{self.start_timeout_s:g}s (is the Tinker service reachable?)"
            ) from None
        except Exception as exc:
            error = tinker_error(exc, what)
            raise error or ProviderError(f"{what}: {type(exc).__name__}: {exc!s:.300}") from exc

    def _release(self) -> None:
        if self._holding_slot:
            self._holding_slot = False
            self.live_samplers.release(self.model_path)

    def request(self, prompt: Prompt, params: SamplingParams) -> tuple[list[int], Any]:
        """The prompt tokens and the SDK sampling parameters of one request."""
        renderer = self.connection.renderer
        if renderer is None:
            raise SamplerError("TinkerSampler used before start()")
        stop: list[int] | list[str]
        if isinstance(prompt, str):
            tokens = renderer.tokenizer.encode(prompt)
            stop = [*params.stop, "<|endoftext|>", "<|im_end|>"]
        else:
            generation = renderer.generation_prompt(prompt)
            tokens = list(generation.tokens)
            stop = chat_stop(params, generation)
        return tokens, tinker_sampling_params(params, stop)

    async def _sample(self, prompt: Prompt, params: SamplingParams) -> Completion:
        outcome, attempts = await retry_call(
            self.retry, self._attempt, prompt, params, label=f"{self.label} sample {self.model}"
        )
        if isinstance(outcome, ProviderError):
            raise SamplerError(
                f"{outcome} (after {attempts} attempt(s))", fatal=outcome.fatal
            ) from outcome
        return outcome

    async def _attempt(self, prompt: Prompt, params: SamplingParams) -> Completion:
        """One attempt of :meth:`sample` (creating the client first, if need be)."""
        try:
            response, prompt_tokens = await self._sampled(prompt, params)
        except ProviderError:
            raise
        except Exception as exc:  # not an API error: retrying would not help
            raise SamplerError(
                f"{self.label} sample {self.model}: {type(exc).__name__}: {exc!s:.300}"
            ) from exc
        return await anyio.to_thread.run_sync(self.parse, prompt, params, response, prompt_tokens)

    async def reply(
        self, prompt: Prompt, params: SamplingParams | None, *, observe: Observer | None = None
    ) -> Reply:
        """One sample of ``prompt``: a chat answer's ``<think>`` block as the reasoning, a raw
        text prompt's continuation as the answer, the text cut at the first of
        ``params.stop`` (then the finish reason is ``stop``).

        Creates the sampling client on first use (see :meth:`open`). Tinker reports no rate
        limit headers, so ``observe`` is never called.

        Raises:
            ProviderError: the attempt failed: an SDK error by its status, other SDK failures
                as retryable, a failed start as :meth:`open` says.
        """
        if params is None:
            raise ConfigurationError("TinkerSampler.reply needs sampling params (max_tokens)")
        try:
            response, prompt_tokens = await self._sampled(prompt, params)
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderUnavailableError(
                f"{self.label}: sample {self.model}: {type(exc).__name__}: {exc!s:.300}"
            ) from None
        return await anyio.to_thread.run_sync(
            self.reply_of, prompt, params, response, prompt_tokens
        )

    async def _sampled(self, prompt: Prompt, params: SamplingParams) -> tuple[Any, int]:
        """The SDK's response to ``prompt`` and the prompt's length in tokens.

        Rendering runs in a worker thread: a long prompt's tokenization is CPU work that would
        hold up every other request on the loop.
        """
        await self.open()
        tokens, sampling = await anyio.to_thread.run_sync(self.request, prompt, params)
        return await self._draw(tokens, sampling), len(tokens)

    async def _draw(self, tokens: list[int], sampling: Any) -> Any:
        """One SDK sample call; an API error as the ProviderError it stands for."""
        import tinker

        try:
            return await resolve_future(
                self._client.sample(
                    prompt=tinker.types.ModelInput.from_ints(tokens),
                    num_samples=1,
                    sampling_params=sampling,
                )
            )
        except Exception as exc:
            error = tinker_error(exc, f"{self.label}: sample {self.model}")
            if error is None:
                raise
            raise error from exc

    def reply_of(
        self, prompt: Prompt, params: SamplingParams, response: Any, prompt_tokens: int
    ) -> Reply:
        """Turn an SDK sample response into a :class:`Reply` (reasoning apart)."""
        completion = self.parse(prompt, params, response, prompt_tokens)
        reasoning, answer = ("", completion.text)
        if not isinstance(prompt, str):
            reasoning, answer = split_completion(completion.text)
        return Reply(
            reasoning=reasoning,
            answer=answer,
            reasoning_kind=ReasoningKind.RAW if reasoning else ReasoningKind.NONE,
            finish_reason=completion.finish_reason,
            usage=TokenUsage(
                prompt_tokens=prompt_tokens, completion_tokens=completion.completion_tokens or 0
            ),
        )

    def parse(
        self, prompt: Prompt, params: SamplingParams, response: Any, prompt_tokens: int
    ) -> Completion:
        """Turn an SDK sample response into a :class:`Completion`."""
        renderer = self.connection.renderer
        assert renderer is not None
        text, finish, out = read_sample(
            renderer, response, raw=isinstance(prompt, str), what=f"{self.label}: {self.model}"
        )
        text, cut = cut_at_stop(text, params.stop)
        if cut:
            finish = FinishReason.STOP
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=out,
        )

    async def aclose(self) -> None:
        """Drop the sampling client, free the live-sampler slot, and close the session this
        sampler opened (idempotent).
        """
        self._client = None
        self._release()
        self._failures.clear()
        await self.connection.aclose()


def read_sample(
    renderer: ChatRenderer, response: Any, *, raw: bool = False, what: str = "tinker sample"
) -> tuple[str, FinishReason, int]:
    """The text, finish reason and completion token count of an SDK sample response's first
    sequence: decoded as plain text (``raw``, a text prompt) or parsed as the chat format's
    assistant turn.

    Raises:
        ProviderUnavailableError: the response holds no sequence.
    """
    sequences = getattr(response, "sequences", None)
    if not sequences:
        raise ProviderUnavailableError(f"{what}: the response holds no sequence")
    sequence = sequences[0]
    out = [int(t) for t in sequence.tokens]
    finish = FinishReason.LENGTH if sequence.stop_reason == "length" else FinishReason.STOP
    if raw:
        text = renderer.tokenizer.decode(out, skip_special_tokens=True)
    else:
        text = renderer.parse_response(out).content
    return text, finish, len(out)
