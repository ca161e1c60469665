"""Anthropic's Messages API over httpx, with extended thinking.

Thinking is enabled with a token budget (``thinking=4096``) or adaptively
(``thinking="adaptive"``, newer models). Thinking blocks become the trace's reasoning, marked as
a provider summary (Claude 4 models return summarized thinking); redacted thinking blocks are
counted in the metadata, never stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.clients.retry import error_for_status
from tracedistill.clients.sse import event_object
from tracedistill.errors import ConfigurationError, ProviderError, ProviderUnavailableError
from tracedistill.records import FinishReason, ReasoningKind, SamplingParams, TokenUsage
from tracedistill.teachers.base import (
    BatchResult,
    BatchStatus,
    Observer,
    TeacherCompletion,
    TeacherRequest,
)
from tracedistill.teachers.http import HttpTeacher

__all__ = ["ANTHROPIC_BASE_URL", "AnthropicTeacher", "MessageStream"]

#: Anthropic's API root (``/v1/messages`` is appended).
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"

_FINISH = {
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

DEFAULT_PARAMS = SamplingParams(max_tokens=16000, temperature=1.0)


class AnthropicTeacher(HttpTeacher):
    """A Claude model through the Anthropic Messages API.

    Args:
        model: e.g. ``claude-sonnet-4-5``.
        thinking: ``None`` (off), a budget in tokens (>= 1024 and < ``max_tokens``),
            ``"adaptive"``, or a raw ``thinking`` object.
        api_key: the key, or None to read ``ANTHROPIC_API_KEY``.
        base_url: the API root.
        params: sampling parameters. With thinking on, Anthropic requires temperature 1 and no
            top_k; ``params.extra`` is merged into the body.
        summarized_thinking: mark thinking as a provider summary (Claude 4 and later) rather
            than the raw chain of thought.
        stream: ask for server-sent events (``"stream": true``) and assemble the message from
            ``message_start``, ``content_block_*`` (text, thinking and signature deltas),
            ``message_delta`` (stop reason, cumulative usage) and ``message_stop``; ``ping``
            events keep a quiet stream alive and an ``error`` event (``overloaded_error``
            mid-stream) is retried like the status it stands for. A stalled stream is cut after
            ``idle_timeout`` seconds without an event while a long answer that keeps streaming
            is never cut. Off by default, like the OpenAI-compatible teacher, so the two
            behave alike; Anthropic recommends it for long requests (large ``max_tokens``).
        idle_timeout: with ``stream=True``, the longest silence between two events (seconds).
        **kwargs: :class:`~tracedistill.teachers.http.HttpTeacher` and
            :class:`~tracedistill.teachers.base.Teacher` arguments.
    """

    def __init__(
        self,
        model: str,
        *,
        thinking: int | str | Mapping[str, Any] | None = 8000,
        api_key: str | Secret | None = None,
        base_url: str = ANTHROPIC_BASE_URL,
        params: SamplingParams | None = None,
        summarized_thinking: bool = True,
        anthropic_version: str = ANTHROPIC_VERSION,
        **kwargs: Any,
    ) -> None:
        params = params or DEFAULT_PARAMS
        self.thinking = _thinking(thinking, params)
        if self.thinking is not None and "thinking" not in params.extra:
            params = attrs.evolve(params, extra={**params.extra, "thinking": self.thinking})
        super().__init__(
            model=model,
            base_url=base_url,
            api_key=resolve_secret(api_key, "ANTHROPIC_API_KEY"),
            params=params,
            **kwargs,
        )
        self.summarized_thinking = summarized_thinking
        self.anthropic_version = anthropic_version

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.anthropic_version}
        if self._api_key is not None:
            headers["x-api-key"] = self._api_key.reveal()
        return headers

    def body(self, request: TeacherRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_dict() for m in request.messages if m.role != "system"],
        }
        if system:
            body["system"] = system
        p = request.params
        if p is not None:
            body["max_tokens"] = p.max_tokens
            thinking_on = "thinking" in p.extra
            if not thinking_on:
                body["temperature"] = min(p.temperature, 1.0)
                if p.top_k is not None:
                    body["top_k"] = p.top_k
            if p.top_p != 1.0:
                body["top_p"] = p.top_p
            if p.stop:
                body["stop_sequences"] = list(p.stop)
            body.update(p.extra)
        return body

    async def complete(
        self, request: TeacherRequest, *, observe: Observer | None = None
    ) -> TeacherCompletion:
        """Make one Messages API request and normalize its answer."""
        body = self.body(request)
        if self.stream:
            body["stream"] = True
            sink = MessageStream(self)
            await self._post_stream("/v1/messages", body, sink, observe=observe)
            return self.parse(sink.message())
        data, _headers = await self._post_json("/v1/messages", body, observe=observe)
        return self.parse(data)

    # --- Message Batches ------------------------------------------------------------------------

    #: batch requests cost this fraction of the regular price (Anthropic: half)
    batch_discount = 0.5

    async def submit_batch(self, requests: Sequence[TeacherRequest]) -> str:
        """Create a Message Batch (``custom_id`` = request key); return its id."""
        data, _ = await self._post_json(
            "/v1/messages/batches",
            {"requests": [{"custom_id": r.key, "params": self.body(r)} for r in requests]},
            observe=None,
        )
        return str(data["id"])

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        """Return where a batch stands."""
        data = await self._get_json(f"/v1/messages/batches/{batch_id}")
        status = str(data.get("processing_status"))
        return BatchStatus(
            id=batch_id,
            done=status == "ended",
            status=status,
            counts=dict(data.get("request_counts") or {}),
            handles={"results": data.get("results_url")},
        )

    async def batch_results(self, status: BatchStatus) -> list[BatchResult]:
        """Read the results of a finished batch."""
        url = status.handles.get("results") or f"/v1/messages/batches/{status.id}/results"
        content = (await self._send("GET", str(url))).content
        results: list[BatchResult] = []
        for line in content.splitlines():
            if not line.strip():
                continue
            record = orjson.loads(line)
            results.append((str(record.get("custom_id")), self._batch_outcome(record)))
        return results

    def _batch_outcome(self, record: Mapping[str, Any]) -> TeacherCompletion | ProviderError:
        result = record.get("result")
        if not isinstance(result, Mapping):
            return ProviderUnavailableError(f"{self.name}: batch result without a result")
        kind = result.get("type")
        if kind == "succeeded" and isinstance(result.get("message"), Mapping):
            try:
                return self.parse(result["message"])
            except ProviderError as exc:
                return exc
            except (KeyError, TypeError, ValueError) as exc:
                return ProviderUnavailableError(f"{self.name}: unexpected batch result: {exc}")
        if kind == "errored":
            try:
                self.parse({"type": "error", "error": (result.get("error") or {}).get("error")})
            except ProviderError as exc:
                return exc
        return ProviderUnavailableError(f"{self.name}: batch request {kind}")

    def parse(self, data: Mapping[str, Any]) -> TeacherCompletion:
        """Normalize a Messages API response body (an error body raises its error)."""
        if data.get("type") == "error" or isinstance(data.get("error"), Mapping):
            error = data.get("error") or {}
            kind = (
                str(error.get("type", "api_error")) if isinstance(error, Mapping) else "api_error"
            )
            message = self._redact(
                str(error.get("message", "")) if isinstance(error, Mapping) else str(error)
            )
            status = _ERROR_STATUS.get(kind, 500)
            raise error_for_status(
                status,
                f"{self.name}: {kind} in response body: {message[:500]}",
                provider_message=message,
            )
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise ProviderUnavailableError(f"{self.name}: response has no content blocks")
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
        usage_data = data.get("usage") or {}
        usage = TokenUsage(
            prompt_tokens=sum(
                int(usage_data.get(k) or 0)
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            ),
            completion_tokens=int(usage_data.get("output_tokens") or 0),
        )
        stop = data.get("stop_reason")
        finish = _FINISH.get(str(stop), FinishReason.OTHER)
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
        if reasoning:
            kind_out = ReasoningKind.SUMMARY if self.summarized_thinking else ReasoningKind.RAW
        else:
            kind_out = ReasoningKind.NONE
        return TeacherCompletion(
            reasoning=reasoning,
            answer="".join(text),
            reasoning_kind=kind_out,
            finish_reason=finish,
            usage=usage,
            metadata=metadata,
        )


class MessageStream:
    """Assembles a streamed Messages API answer into the message a non-streamed request would
    have returned, so one parser reads both.

    Unknown event and delta types are ignored (Anthropic may add new ones); ``usage`` from
    ``message_delta`` is cumulative and overrides ``message_start``'s.
    """

    def __init__(self, teacher: AnthropicTeacher) -> None:
        self._teacher = teacher
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
        payload = event_object(self._teacher.name, event, data)
        self.events += 1
        kind = payload.get("type", event)
        if kind == "error" or event == "error":
            self._teacher.parse({"type": "error", "error": payload.get("error")})
        elif kind == "message_start" and isinstance(payload.get("message"), Mapping):
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
                f"{self._teacher.name}: stream ended without a stop reason ({self.events} events)"
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


def _thinking(
    thinking: int | str | Mapping[str, Any] | None, params: SamplingParams
) -> dict[str, Any] | None:
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
