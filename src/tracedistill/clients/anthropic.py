"""Anthropic's Messages API: request bodies, responses, streams, and a model client.

The one parser of the Messages API: :class:`AnthropicClient` (evaluation) and
:class:`~tracedistill.teachers.anthropic.AnthropicTeacher` both read answers with
:func:`parse_message` and assemble streams with :class:`MessageStream`.

Thinking blocks become the reasoning, redacted thinking blocks are counted in the metadata
(never stored), usage counts cached input tokens as input, and an error body (a batch result,
a stream's ``error`` event) raises the error its type stands for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.clients.base import Completion, Observer, Prompt, Reply, _trusted_reply
from tracedistill.clients.remote import RemoteModelClient
from tracedistill.clients.retry import error_for_status
from tracedistill.clients.sse import Redact, event_object, keep_text, stream_identity
from tracedistill.errors import ConfigurationError, ProviderError, ProviderUnavailableError
from tracedistill.records import FinishReason, Message, ReasoningKind, SamplingParams, TokenUsage

__all__ = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_VERSION",
    "FINISH_REASONS",
    "AnthropicClient",
    "MessageStream",
    "auth_headers",
    "error_of",
    "messages_body",
    "parse_message",
    "thinking_config",
]

#: Anthropic's API root (``/v1/messages`` is appended).
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
#: The ``anthropic-version`` header sent.
ANTHROPIC_VERSION = "2023-06-01"

#: Anthropic ``stop_reason`` values.
FINISH_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "refusal": FinishReason.CONTENT_FILTER,
}

# Anthropic error types in a body, mapped to the HTTP status they stand for.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def thinking_config(
    thinking: int | str | Mapping[str, Any] | None, params: SamplingParams
) -> dict[str, Any] | None:
    """The ``thinking`` object for a budget in tokens, ``"adaptive"`` or a raw object (None: off).

    Raises:
        ConfigurationError: a budget below 1024 or not below ``max_tokens``; thinking with a
            temperature other than 1 or with ``top_k`` (Anthropic refuses both).
    """
    if thinking is None or thinking is False:
        return None
    if isinstance(thinking, Mapping):
        config = dict(thinking)
    elif thinking == "adaptive":
        config = {"type": "adaptive"}
    elif isinstance(thinking, int) and not isinstance(thinking, bool):
        if thinking < 1024 or thinking >= params.max_tokens:
            raise ConfigurationError(
                f"thinking budget must be >= 1024 and < max_tokens ({params.max_tokens}); "
                f"got {thinking}"
            )
        config = {"type": "enabled", "budget_tokens": thinking}
    else:
        raise ConfigurationError(
            f"thinking must be None, a token budget, 'adaptive' or a dict; got {thinking!r}"
        )
    if params.temperature != 1.0 or params.top_k is not None:
        raise ConfigurationError(
            "Anthropic's extended thinking requires temperature 1 and no top_k; set "
            "params=SamplingParams(max_tokens=..., temperature=1.0) or thinking=None"
        )
    return config


def messages_body(
    model: str, messages: Sequence[Message], params: SamplingParams | None
) -> dict[str, Any]:
    """The Messages API body: system messages joined into ``system``, the sampling fields
    (no temperature or ``top_k`` when ``params.extra`` turns thinking on), then ``params.extra``.
    """
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.to_dict() for m in messages if m.role != "system"],
    }
    if system:
        body["system"] = system
    if params is not None:
        body["max_tokens"] = params.max_tokens
        if "thinking" not in params.extra:
            body["temperature"] = min(params.temperature, 1.0)
            if params.top_k is not None:
                body["top_k"] = params.top_k
        if params.top_p != 1.0:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop_sequences"] = list(params.stop)
        body.update(params.extra)
    return body


def error_of(name: str, error: Any, redact: Redact = keep_text) -> ProviderError:
    """The error an Anthropic error object (``{"type": ..., "message": ...}``) stands for."""
    kind = str(error.get("type", "api_error")) if isinstance(error, Mapping) else "api_error"
    message = redact(str(error.get("message", "")) if isinstance(error, Mapping) else str(error))
    return error_for_status(
        _ERROR_STATUS.get(kind, 500),
        f"{name}: {kind} in response body: {message[:500]}",
        provider_message=message,
    )


def parse_message(
    data: Mapping[str, Any],
    *,
    name: str = "anthropic",
    redact: Redact = keep_text,
    summarized_thinking: bool = True,
) -> Reply:
    """Normalize a Messages API response body.

    Raises:
        ProviderError: an error body (the class its type stands for); a body without content
            blocks (retryable).
    """
    if data.get("type") == "error" or isinstance(data.get("error"), Mapping):
        raise error_of(name, data.get("error") or {}, redact)
    blocks = data.get("content")
    if not isinstance(blocks, list):
        raise ProviderUnavailableError(f"{name}: response has no content blocks")
    thinking: list[str] = []
    text: list[str] = []
    redacted = 0
    for block in blocks:
        if not isinstance(block, Mapping):
            continue
        block_type = block.get("type")
        if block_type == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif block_type == "redacted_thinking":
            redacted += 1
        elif block_type == "text":
            text.append(str(block.get("text", "")))
    stop = data.get("stop_reason")
    finish = FINISH_REASONS.get(str(stop), FinishReason.OTHER)
    metadata: dict[str, Any] = {}
    if isinstance(data.get("id"), str):
        metadata["response_id"] = data["id"]
    if isinstance(data.get("model"), str):
        metadata["served_model"] = data["model"]
    if redacted:
        metadata["redacted_thinking_blocks"] = redacted
    if finish is FinishReason.OTHER and stop is not None:
        metadata["native_finish_reason"] = str(stop)
    reasoning = "\n\n".join(t for t in thinking if t)
    kind = ReasoningKind.NONE
    if reasoning:
        kind = ReasoningKind.SUMMARY if summarized_thinking else ReasoningKind.RAW
    return _trusted_reply(
        reasoning, "".join(text), kind, finish, _usage(data.get("usage")), None, metadata
    )


def _usage(data: Any) -> TokenUsage:
    if not isinstance(data, Mapping):
        return TokenUsage()
    return TokenUsage.of_counts(
        sum(
            int(data.get(k) or 0)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        ),
        int(data.get("output_tokens") or 0),
    )


def auth_headers(api_key: Secret | None, version: str) -> dict[str, str]:
    """The Messages API's version and key headers (no key header without a key)."""
    headers = {"anthropic-version": version}
    if api_key is not None:
        headers["x-api-key"] = api_key.reveal()
    return headers


class MessageStream:
    """Assembles a streamed Messages API answer into the message a non-streamed request would
    have returned, so one parser reads both.

    Unknown event and delta types are ignored (Anthropic may add new ones); ``usage`` from
    ``message_delta`` is cumulative and overrides ``message_start``'s.

    Args:
        name: the name errors are reported under (or, deprecated, the teacher or client whose
            ``name`` and ``_redact`` to use).
        redact: removes the key from error messages.
    """

    def __init__(self, name: Any = "anthropic", redact: Redact | None = None) -> None:
        self._name, self._redact = stream_identity(name, redact, "anthropic")
        self.done = False
        self._message: dict[str, Any] = {}
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        self._parts: dict[int, list[str]] = {}
        self._stop: Any = None
        self.events = 0

    def feed(self, event: str, data: bytes) -> None:
        """Take one event (an error event raises the error it stands for)."""
        if not data.strip():
            return
        payload = event_object(self._name, event, data)
        self.events += 1
        kind = payload.get("type", event)
        if kind == "error" or event == "error":
            raise error_of(self._name, payload.get("error") or {}, self._redact)
        if kind == "message_start" and isinstance(payload.get("message"), Mapping):
            self._message = dict(payload["message"])
            self._usage.update(self._message.get("usage") or {})
        elif kind == "content_block_start" and isinstance(payload.get("content_block"), Mapping):
            index = int(payload.get("index", len(self._blocks)))
            self._blocks[index] = dict(payload["content_block"])
            self._parts[index] = []
        elif kind == "content_block_delta" and isinstance(payload.get("delta"), Mapping):
            self._delta(int(payload.get("index", 0)), payload["delta"])
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, Mapping) and delta.get("stop_reason") is not None:
                self._stop = delta["stop_reason"]
            if isinstance(payload.get("usage"), Mapping):
                self._usage.update({k: v for k, v in payload["usage"].items() if v is not None})
        elif kind == "message_stop":
            self.done = True

    def _delta(self, index: int, delta: Mapping[str, Any]) -> None:
        kind = delta.get("type")
        field = {"text_delta": "text", "thinking_delta": "thinking"}.get(str(kind))
        if field is not None and isinstance(delta.get(field), str):
            self._parts.setdefault(index, []).append(delta[field])
        elif kind == "signature_delta" and index in self._blocks:
            self._blocks[index]["signature"] = delta.get("signature")

    def ended(self) -> bool:
        """A stream is whole only once ``message_stop`` arrived."""
        return False

    def message(self) -> dict[str, Any]:
        """The message the stream amounts to.

        Raises:
            ProviderUnavailableError: the stream never said why it stopped (it was cut).
        """
        if self._stop is None:
            raise ProviderUnavailableError(
                f"{self._name}: stream ended without a stop reason ({self.events} events)"
            )
        content = []
        for index in sorted(self._blocks):
            block = dict(self._blocks[index])
            field = {"text": "text", "thinking": "thinking"}.get(str(block.get("type")))
            if field is not None:
                block[field] = str(block.get(field) or "") + "".join(self._parts.get(index, ()))
            content.append(block)
        return {
            **self._message,
            "content": content,
            "stop_reason": self._stop,
            "usage": self._usage,
        }


class AnthropicClient(RemoteModelClient):
    """Samples a Claude model through the Anthropic Messages API (chat prompts only).

    The completion's text is the thinking (when on and ``include_reasoning``) as a ``<think>``
    block in front of the answer, like the OpenAI-compatible client's.

    Args:
        model: e.g. ``claude-sonnet-4-5``.
        api_key: the key, or None to read ``api_key_env``.
        api_key_env: the environment variable holding the key.
        base_url: the API root (``/v1/messages`` is appended).
        thinking: None (off: greedy sampling works), a budget in tokens, ``"adaptive"`` or a
            raw ``thinking`` object (then sample with temperature 1 and no ``top_k``).
        include_reasoning: keep the thinking in the completion's text.
        anthropic_version: the ``anthropic-version`` header.
        summarized_thinking: mark thinking as a provider summary (Claude 4 and later) rather
            than the raw chain of thought.
        **kwargs: :class:`~tracedistill.clients.remote.RemoteModelClient` arguments
            (``max_concurrency``, ``timeout_s``, ``retry``, ``transport``, ``stream``,
            ``idle_timeout``, ``headers``).
    """

    name = "anthropic"
    #: ``reply`` is one JSON POST (or one stream): the transport can bound the attempt
    reply_is_one_post = True

    def __init__(
        self,
        model: str,
        *,
        api_key: str | Secret | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        base_url: str = ANTHROPIC_BASE_URL,
        thinking: int | str | Mapping[str, Any] | None = None,
        include_reasoning: bool = True,
        anthropic_version: str = ANTHROPIC_VERSION,
        summarized_thinking: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model, base_url=base_url, api_key=resolve_secret(api_key, api_key_env), **kwargs
        )
        self.summarized_thinking = summarized_thinking
        self.thinking = thinking
        self.include_reasoning = include_reasoning
        self.anthropic_version = anthropic_version

    def _auth_headers(self) -> dict[str, str]:
        return auth_headers(self._api_key, self.anthropic_version)

    def body(self, prompt: Prompt, params: SamplingParams | None) -> dict[str, Any]:
        """The JSON body sent for one chat prompt (``params`` None: only the messages)."""
        if isinstance(prompt, str):
            raise ConfigurationError(
                "Anthropic's Messages API takes chat prompts, not raw text: pass messages"
            )
        config = None if params is None else thinking_config(self.thinking, params)
        if config is not None and params is not None and "thinking" not in params.extra:
            params = attrs.evolve(params, extra={**params.extra, "thinking": config})
        return messages_body(self.model, prompt, params)

    async def reply(
        self, prompt: Prompt, params: SamplingParams | None, *, observe: Observer | None = None
    ) -> Reply:
        """One Messages API request for ``prompt``: the parsed answer.

        Raises:
            ProviderError: by HTTP status, by an error body or ``error`` event (the class its
                type stands for); connection errors, stalls and malformed answers as retryable.
        """
        body = self.body(prompt, params)
        if self.stream:
            body["stream"] = True
            sink = MessageStream(self.name, self.redact)
            await self.post_stream("/v1/messages", body, sink, observe=observe)
            data: Mapping[str, Any] = sink.message()
        else:
            data, _headers = await self.post_json("/v1/messages", body, observe=observe)
        return self.reply_of(data)

    def reply_of(self, data: Mapping[str, Any]) -> Reply:
        """Normalize a Messages API response body (an error body raises its error)."""
        return parse_message(
            data, name=self.name, redact=self.redact, summarized_thinking=self.summarized_thinking
        )

    async def _attempt(self, prompt: Prompt, params: SamplingParams) -> Completion:
        # No cut at the stop strings: the Messages API honours ``stop_sequences`` itself.
        reply = await self.reply(prompt, params)
        return reply.completion(include_reasoning=self.include_reasoning)
