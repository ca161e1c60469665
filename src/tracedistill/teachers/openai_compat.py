"""OpenAI-compatible chat completions over httpx, with OpenRouter as the default preset.

Works with OpenRouter, OpenAI, vLLM, SGLang and any server that speaks ``POST
/chat/completions``. Reasoning is read from ``message.reasoning`` (OpenRouter),
``message.reasoning_content`` (vLLM, SGLang, DeepSeek), ``message.reasoning_details`` (typed
OpenRouter items), or from an inline ``<think>`` block in the content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.clients.http import TransportFactory
from tracedistill.clients.openai_compat import FINISH_REASONS, message_reasoning, text_of_parts
from tracedistill.clients.retry import error_for_status
from tracedistill.clients.sse import event_object
from tracedistill.errors import ProviderError, ProviderUnavailableError
from tracedistill.records import (
    THINK_CLOSE,
    THINK_OPEN,
    FinishReason,
    ReasoningKind,
    SamplingParams,
    TokenUsage,
    split_completion,
)
from tracedistill.teachers.base import (
    BatchResult,
    BatchStatus,
    Observer,
    TeacherCompletion,
    TeacherRequest,
)
from tracedistill.teachers.http import HttpTeacher

__all__ = ["OPENROUTER_BASE_URL", "OpenAICompatTeacher", "OpenRouterTeacher"]

#: OpenRouter's API root (``/chat/completions`` is appended).
OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"

DEFAULT_PARAMS = SamplingParams(max_tokens=8192, temperature=1.0)


class OpenAICompatTeacher(HttpTeacher):
    """A teacher behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: the model id (e.g. ``anthropic/claude-sonnet-4.5`` on OpenRouter).
        base_url: the API root; ``/chat/completions`` is appended.
        api_key: the key, or None to read ``api_key_env`` (no key at all is allowed for local
            servers).
        api_key_env: the environment variable holding the key.
        params: sampling parameters; ``params.extra`` is merged into the request body (and is
            part of the request key): put provider fields such as ``reasoning`` there.
        max_tokens_field: the body field for ``max_tokens`` (OpenAI's newer models want
            ``max_completion_tokens``).
        reports_cost: whether the server returns ``usage.cost`` (OpenRouter does).
        stream: ask for server-sent events (``"stream": true`` with
            ``stream_options.include_usage``) and assemble the answer from its deltas, so a
            stalled answer is cut after ``idle_timeout`` seconds without an event (OpenRouter's
            ``: OPENROUTER PROCESSING`` keep-alives count as events) while a long one that keeps
            streaming is never cut. Off by default: a whole JSON body costs the least client CPU
            and every OpenAI-compatible server speaks it; turn it on for long reasoning answers
            from providers that stall. The request key does not depend on it.
        idle_timeout: with ``stream=True``, the longest silence between two events (seconds).
        **kwargs: :class:`~tracedistill.teachers.http.HttpTeacher` and
            :class:`~tracedistill.teachers.base.Teacher` arguments (name, prompts, pricing,
            retry, timeout, transport, headers).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | Secret | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        params: SamplingParams | None = None,
        max_tokens_field: str = "max_tokens",
        reports_cost: bool = False,
        transport: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model=model,
            base_url=base_url,
            api_key=resolve_secret(api_key, api_key_env),
            params=params or DEFAULT_PARAMS,
            transport=transport,
            **kwargs,
        )
        self.max_tokens_field = max_tokens_field
        self.reports_cost = reports_cost

    def _auth_headers(self) -> dict[str, str]:
        if self._api_key is None:
            return {}
        return {"authorization": f"Bearer {self._api_key.reveal()}"}

    def body(self, request: TeacherRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_dict() for m in request.messages],
        }
        p = request.params
        if p is not None:
            body[self.max_tokens_field] = p.max_tokens
            body["temperature"] = p.temperature
            if p.top_p != 1.0:
                body["top_p"] = p.top_p
            if p.top_k is not None:
                body["top_k"] = p.top_k
            if p.seed is not None:
                body["seed"] = p.seed
            if p.stop:
                body["stop"] = list(p.stop)
            body.update(p.extra)
        return body

    async def complete(
        self, request: TeacherRequest, *, observe: Observer | None = None
    ) -> TeacherCompletion:
        """Make one chat-completions request and normalize its answer."""
        body = self.body(request)
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
            sink = ChatStream(self)
            await self._post_stream("/chat/completions", body, sink, observe=observe)
            return self.parse(sink.response())
        data, _headers = await self._post_json("/chat/completions", body, observe=observe)
        return self.parse(data)

    def parse(self, data: Mapping[str, Any]) -> TeacherCompletion:
        """Normalize a chat-completions response body (an error body raises its error)."""
        error = data.get("error")
        if error is not None:
            # An HTTP 200 whose body carries an error (OpenRouter, after the model started).
            raise _body_error(self.name, error, self._redact)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise ProviderUnavailableError(f"{self.name}: response has no choices")
        choice = choices[0]
        if isinstance(choice.get("error"), Mapping):
            raise _body_error(self.name, choice["error"], self._redact)
        message = choice.get("message")
        if not isinstance(message, Mapping):
            raise ProviderUnavailableError(f"{self.name}: response choice has no message")
        raw_finish = choice.get("finish_reason")
        if raw_finish == "error":
            raise ProviderUnavailableError(f"{self.name}: generation ended with an error")
        finish = FINISH_REASONS.get(str(raw_finish), FinishReason.OTHER)
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = text_of_parts(content)
        reasoning, kind = message_reasoning(message)
        if not reasoning and (THINK_OPEN in content or THINK_CLOSE in content):
            reasoning, content = _inline_think(content)
            kind = ReasoningKind.RAW if reasoning else ReasoningKind.NONE
        usage_data = data.get("usage") or {}
        usage = _usage(usage_data)
        cost = usage_data.get("cost") if isinstance(usage_data, Mapping) else None
        metadata: dict[str, Any] = {}
        for field, value in (
            ("served_model", data.get("model")),
            ("provider", data.get("provider")),
            ("response_id", data.get("id")),
            ("native_finish_reason", choice.get("native_finish_reason")),
        ):
            if isinstance(value, str) and value:
                metadata[field] = value
        if finish is FinishReason.OTHER and raw_finish is not None:
            metadata.setdefault("native_finish_reason", str(raw_finish))
        return TeacherCompletion(
            reasoning=reasoning,
            answer=content,
            reasoning_kind=kind if reasoning else ReasoningKind.NONE,
            finish_reason=finish,
            usage=usage,
            cost_usd=float(cost) if isinstance(cost, int | float) and cost >= 0 else None,
            metadata=metadata,
        )

    # --- batch API (OpenAI) ---------------------------------------------------------------------

    #: batch requests cost this fraction of the regular price (OpenAI: half)
    batch_discount = 0.5
    #: the endpoint batch lines are sent to
    batch_endpoint = "/v1/chat/completions"

    async def submit_batch(self, requests: Sequence[TeacherRequest]) -> str:
        """Upload the requests as a JSONL file and create a batch over it; return its id."""
        lines = b"".join(
            orjson.dumps(
                {
                    "custom_id": r.key,
                    "method": "POST",
                    "url": self.batch_endpoint,
                    "body": self.body(r),
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
            for r in requests
        )
        upload = self._json_object(
            await self._send(
                "POST",
                "/files",
                files={"file": ("batch.jsonl", lines, "application/jsonl")},
                data={"purpose": "batch"},
            )
        )
        created, _ = await self._post_json(
            "/batches",
            {
                "input_file_id": upload["id"],
                "endpoint": self.batch_endpoint,
                "completion_window": "24h",
            },
            observe=None,
        )
        return str(created["id"])

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        """Return where a batch stands."""
        data = await self._get_json(f"/batches/{batch_id}")
        status = str(data.get("status"))
        return BatchStatus(
            id=batch_id,
            done=status in ("completed", "failed", "expired", "cancelled"),
            status=status,
            counts=dict(data.get("request_counts") or {}),
            handles={"output": data.get("output_file_id"), "error": data.get("error_file_id")},
        )

    async def batch_results(self, status: BatchStatus) -> list[BatchResult]:
        """Read the output and error files of a finished batch."""
        results: list[BatchResult] = []
        for handle in ("output", "error"):
            file_id = status.handles.get(handle)
            if not file_id:
                continue
            content = (await self._send("GET", f"/files/{file_id}/content")).content
            for line in content.splitlines():
                if not line.strip():
                    continue
                record = orjson.loads(line)
                results.append((str(record.get("custom_id")), self._batch_outcome(record)))
        return results

    def _batch_outcome(self, record: Mapping[str, Any]) -> TeacherCompletion | ProviderError:
        response = record.get("response")
        error = record.get("error")
        if isinstance(response, Mapping):
            code = response.get("status_code")
            body = response.get("body")
            if code == 200 and isinstance(body, Mapping):
                try:
                    return self.parse(body)
                except ProviderError as exc:
                    return exc
                except (KeyError, TypeError, ValueError) as exc:
                    return ProviderUnavailableError(f"{self.name}: unexpected batch result: {exc}")
            if isinstance(code, int):
                message = self._redact(self._error_message(body, str(body)))
                return error_for_status(
                    code, f"{self.name}: batch request failed with HTTP {code}: {message[:500]}"
                )
        if isinstance(error, Mapping):
            message = self._redact(str(error.get("message") or error.get("code") or error))
            return ProviderUnavailableError(f"{self.name}: batch request failed: {message[:500]}")
        return ProviderUnavailableError(f"{self.name}: batch result without a response")

    @classmethod
    def openrouter(
        cls,
        model: str,
        *,
        api_key: str | Secret | None = None,
        params: SamplingParams | None = None,
        reasoning: Mapping[str, Any] | None = None,
        provider: Mapping[str, Any] | None = None,
        enforce_distillable_text: bool | None = True,
        base_url: str = OPENROUTER_BASE_URL,
        transport: TransportFactory | Any = None,
        **kwargs: Any,
    ) -> OpenAICompatTeacher:
        """A teacher on OpenRouter (key from ``OPENROUTER_API_KEY`` unless given).

        Args:
            model: an OpenRouter model id, e.g. ``anthropic/claude-sonnet-4.5``.
            api_key: the key, or None to read ``OPENROUTER_API_KEY``.
            params: sampling parameters (``reasoning`` and ``provider`` are added to
                ``params.extra``, so they are part of the request key).
            reasoning: OpenRouter's ``reasoning`` object, e.g. ``{"effort": "medium"}`` or
                ``{"max_tokens": 4000}`` (default: ``{"enabled": True}``).
            provider: OpenRouter's provider routing object (``order``, ``allow_fallbacks``,
                ``require_parameters``, ``data_collection``, ``zdr``, ``only``, ``ignore``,
                ``quantizations``, ``sort``, ``max_price``, ...).
            enforce_distillable_text: route only to providers whose terms allow distilling the
                output (sets ``provider.enforce_distillable_text``; None leaves it out).
            base_url: the API root (OpenRouter's by default).
            transport: an httpx transport or a factory of one (default: the fastest available).
            **kwargs: other :class:`OpenAICompatTeacher` arguments.
        """
        params = params or DEFAULT_PARAMS
        extra = dict(params.extra)
        extra["reasoning"] = dict(reasoning) if reasoning is not None else {"enabled": True}
        routing = dict(provider or {})
        if enforce_distillable_text is not None:
            routing.setdefault("enforce_distillable_text", enforce_distillable_text)
        if routing:
            extra["provider"] = routing
        return cls(
            model,
            base_url=base_url,
            api_key=api_key,
            api_key_env="OPENROUTER_API_KEY",
            params=attrs.evolve(params, extra=extra),
            reports_cost=True,
            transport=transport,
            **kwargs,
        )


def OpenRouterTeacher(model: str, **kwargs: Any) -> OpenAICompatTeacher:
    """A teacher on OpenRouter; see :meth:`OpenAICompatTeacher.openrouter`."""
    return OpenAICompatTeacher.openrouter(model, **kwargs)


class ChatStream:
    """Assembles a streamed chat completion (``chat.completion.chunk`` events) into the body a
    non-streamed request would have returned, so one parser reads both.

    Content, ``reasoning``/``reasoning_content`` and ``reasoning_details`` deltas are joined;
    the finish reason comes from the last choice that has one and ``usage`` (with OpenRouter's
    ``cost``) from the final chunk. An ``error`` object in a chunk (OpenRouter's mid-stream
    errors) raises the error it stands for.
    """

    def __init__(self, teacher: OpenAICompatTeacher) -> None:
        self._teacher = teacher
        self.done = False
        self._content: list[str] = []
        self._reasoning: dict[str, list[str]] = {}
        self._details: dict[str, list[str]] = {}
        self._top: dict[str, Any] = {}
        self._finish: Any = None
        self._native_finish: Any = None
        self._usage: Any = None
        self.chunks = 0

    def feed(self, event: str, data: bytes) -> None:
        """Take one event's data (a JSON chunk, or ``[DONE]``)."""
        if data == b"[DONE]":
            self.done = True
            return
        if not data.strip():
            return
        chunk = event_object(self._teacher.name, event, data)
        self.chunks += 1
        if chunk.get("error") is not None:
            raise _body_error(self._teacher.name, chunk["error"], self._teacher._redact)
        for field in ("id", "model", "provider"):
            if field not in self._top and isinstance(chunk.get(field), str):
                self._top[field] = chunk[field]
        if isinstance(chunk.get("usage"), Mapping):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            self._choice(choices[0])

    def _choice(self, choice: Mapping[str, Any]) -> None:
        if isinstance(choice.get("error"), Mapping):
            raise _body_error(self._teacher.name, choice["error"], self._teacher._redact)
        if choice.get("finish_reason") is not None:
            self._finish = choice["finish_reason"]
            self._native_finish = choice.get("native_finish_reason")
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return
        content = delta.get("content")
        if isinstance(content, str):
            self._content.append(content)
        elif isinstance(content, list):
            self._content.append(text_of_parts(content))
        for field in ("reasoning", "reasoning_content"):
            value = delta.get(field)
            if isinstance(value, str) and value:
                self._reasoning.setdefault(field, []).append(value)
        details = delta.get("reasoning_details")
        if isinstance(details, list):
            for item in details:
                if isinstance(item, Mapping):
                    kind = item.get("type")
                    key = "summary" if kind == "reasoning.summary" else "text"
                    if kind in ("reasoning.text", "reasoning.summary") and isinstance(
                        item.get(key), str
                    ):
                        self._details.setdefault(str(kind), []).append(item[key])

    def ended(self) -> bool:
        """A stream closed without ``[DONE]`` is whole only if it finished and sent its usage."""
        return self._finish is not None and self._usage is not None

    def response(self) -> dict[str, Any]:
        """The chat-completion body the stream amounts to.

        Raises:
            ProviderUnavailableError: the stream never said why it finished (it was cut).
        """
        if self._finish is None:
            raise ProviderUnavailableError(
                f"{self._teacher.name}: stream ended without a finish reason ({self.chunks} chunks)"
            )
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content)}
        for field, parts in self._reasoning.items():
            message[field] = "".join(parts)
        details = []
        if "reasoning.text" in self._details:
            details.append(
                {"type": "reasoning.text", "text": "".join(self._details["reasoning.text"])}
            )
        if "reasoning.summary" in self._details:
            details.append(
                {
                    "type": "reasoning.summary",
                    "summary": "".join(self._details["reasoning.summary"]),
                }
            )
        if details:
            message["reasoning_details"] = details
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": self._finish}
        if self._native_finish is not None:
            choice["native_finish_reason"] = self._native_finish
        body: dict[str, Any] = {**self._top, "choices": [choice]}
        if self._usage is not None:
            body["usage"] = self._usage
        return body


def _body_error(name: str, error: Any, redact: Any) -> Exception:
    if isinstance(error, Mapping):
        code = error.get("code")
        message = str(error.get("message") or "error in response body")
    else:
        code, message = None, str(error)
    message = redact(message)
    status = code if isinstance(code, int) else None
    if status is None and isinstance(code, str) and code.isdigit():
        status = int(code)
    if status is None:
        return ProviderUnavailableError(
            f"{name}: error in response body: {message[:500]}", provider_message=message
        )
    return error_for_status(
        status,
        f"{name}: error {status} in response body: {message[:500]}",
        provider_message=message,
    )


def _inline_think(content: str) -> tuple[str, str]:
    if content.lstrip().startswith(THINK_OPEN):
        return split_completion(content)
    # Servers whose chat template opens the block in the prompt return only the closing tag.
    head, _sep, tail = content.partition(THINK_CLOSE)
    return head.strip("\n"), tail.lstrip("\n")


def _usage(data: Any) -> TokenUsage:
    if not isinstance(data, Mapping):
        return TokenUsage()
    details = data.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, Mapping) else None

    def count(value: Any) -> int:
        return int(value) if isinstance(value, int | float) and value >= 0 else 0

    return TokenUsage(
        prompt_tokens=count(data.get("prompt_tokens")),
        completion_tokens=count(data.get("completion_tokens")),
        reasoning_tokens=count(reasoning),
    )
