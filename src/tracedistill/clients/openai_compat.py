"""OpenAI-compatible APIs (vLLM, SGLang, OpenRouter, OpenAI): bodies, answers, streams, a client.

The one parser of ``/chat/completions`` answers: :class:`OpenAICompatibleSampler` (evaluation)
and :class:`~tracedistill.teachers.openai_compat.OpenAICompatTeacher` both build bodies with
:func:`chat_body`, read answers with :func:`parse_chat` and assemble streams with
:class:`ChatStream`. Reasoning is read from ``message.reasoning`` (OpenRouter),
``message.reasoning_content`` (vLLM, SGLang, DeepSeek), ``message.reasoning_details`` (typed
OpenRouter items), or from an inline ``<think>`` block in the content; OpenRouter's ``usage.cost``
and its HTTP-200 error bodies (a failure after the model started) are read too.

The sampler sends chat prompts to ``POST {base_url}/chat/completions`` and raw-text prompts to
``POST {base_url}/completions``; a LoRA adapter served by vLLM or SGLang is sampled by passing
its served name as ``model``. It talks through :class:`~tracedistill.clients.http.HttpClient`
(the teachers' transport): 408/429/5xx and dropped connections are retried with back-off,
401/402/403 stop the evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.chat import ChatRenderer
from tracedistill.clients.base import (
    Completion,
    Observer,
    Prompt,
    Reply,
    _trusted_reply,
    cut_completion,
)
from tracedistill.clients.remote import RemoteModelClient
from tracedistill.clients.retry import error_for_status
from tracedistill.clients.sse import Redact, event_object, keep_text, stream_identity
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

__all__ = [
    "FINISH_REASONS",
    "ChatStream",
    "OpenAICompatibleSampler",
    "bearer_headers",
    "body_error",
    "chat_body",
    "inline_think",
    "message_reasoning",
    "parse_chat",
    "parse_text",
    "text_of_parts",
    "usage_of",
]

#: OpenAI-style ``finish_reason`` values.
FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "eos": FinishReason.STOP,
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "max_tokens": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def text_of_parts(parts: Any) -> str:
    """The text of a message's ``content``: a string, or a list of content parts."""
    if parts is None:
        return ""
    if isinstance(parts, list):
        return "".join(
            str(p.get("text", ""))
            for p in parts
            if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return str(parts)


def message_reasoning(message: Mapping[str, Any]) -> tuple[str, ReasoningKind]:
    """A message's separate reasoning (``reasoning``, ``reasoning_content`` or
    ``reasoning_details``) and whether it is the raw text or a summary.
    """
    details = message.get("reasoning_details")
    text_parts: list[str] = []
    summary_parts: list[str] = []
    if isinstance(details, list):
        for item in details:
            # ``type(x) is dict`` first: an isinstance check against the Mapping ABC runs
            # Python code for every reasoning item of every response.
            if type(item) is not dict and not isinstance(item, Mapping):
                continue
            kind = item.get("type")
            if kind == "reasoning.text" and isinstance(item.get("text"), str):
                text_parts.append(item["text"])
            elif kind == "reasoning.summary" and isinstance(item.get("summary"), str):
                summary_parts.append(item["summary"])
    for field in ("reasoning", "reasoning_content"):
        value = message.get(field)
        if isinstance(value, str) and value:
            kind = ReasoningKind.SUMMARY if summary_parts and not text_parts else ReasoningKind.RAW
            return value, kind
    if text_parts:
        return "".join(text_parts), ReasoningKind.RAW
    if summary_parts:
        return "\n\n".join(summary_parts), ReasoningKind.SUMMARY
    return "", ReasoningKind.NONE


def chat_body(
    model: str,
    prompt: Prompt,
    params: SamplingParams | None,
    *,
    max_tokens_field: str = "max_tokens",
    send_top_k: bool = True,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body for ``prompt``: ``messages`` (``/chat/completions``) or, for raw text,
    ``prompt`` (``/completions``); then the sampling fields, ``extra_body`` and ``params.extra``.

    Args:
        model: the served model id.
        prompt: chat messages or raw text.
        params: the sampling parameters (None: only the model and the prompt).
        max_tokens_field: the body field for ``max_tokens`` (OpenAI's newer models want
            ``max_completion_tokens``).
        send_top_k: send ``top_k`` (vLLM, SGLang and OpenRouter take it; OpenAI's own API
            rejects it).
        extra_body: fields merged into the body before ``params.extra``.
    """
    body: dict[str, Any] = {"model": model}
    if isinstance(prompt, str):
        body["prompt"] = prompt
    else:
        body["messages"] = [m.to_dict() for m in prompt]
    if params is not None:
        body[max_tokens_field] = params.max_tokens
        body["temperature"] = params.temperature
        if params.top_p != 1.0:
            body["top_p"] = params.top_p
        if params.top_k is not None and send_top_k:
            body["top_k"] = params.top_k
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
    if extra_body:
        body.update(extra_body)
    if params is not None:
        body.update(params.extra)
    return body


def body_error(name: str, error: Any, redact: Redact = keep_text) -> ProviderError:
    """The error an ``error`` object in a 2xx body (or a stream chunk) stands for: its ``code``
    as an HTTP status when it is one, else a retryable :class:`ProviderUnavailableError`.
    """
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


def inline_think(content: str) -> tuple[str, str]:
    """The reasoning and the answer of a content that holds a ``<think>`` block."""
    if content.lstrip().startswith(THINK_OPEN):
        return split_completion(content)
    # Servers whose chat template opens the block in the prompt return only the closing tag.
    head, _sep, tail = content.partition(THINK_CLOSE)
    return head.strip("\n"), tail.lstrip("\n")


_NUMBER = (int, float)  # a tuple: ``int | float`` in a body builds a new union on every call


def _count(value: Any) -> int:
    return int(value) if isinstance(value, _NUMBER) and value >= 0 else 0


def usage_of(data: Any) -> TokenUsage:
    """The token counts of a ``usage`` object (reasoning tokens from its details)."""
    # ``type(x) is dict`` first, here and in parse_chat: a parsed body's objects are dicts, and
    # an isinstance check against the Mapping ABC runs Python code on every call.
    if type(data) is not dict and not isinstance(data, Mapping):
        return TokenUsage()
    details = data.get("completion_tokens_details")
    reasoning = (
        details.get("reasoning_tokens")
        if details is not None and (type(details) is dict or isinstance(details, Mapping))
        else None
    )
    prompt = data.get("prompt_tokens")
    completion = data.get("completion_tokens")
    # The usual counts are plain non-negative ints: taken as they are; anything else is
    # cleaned by _count (floats truncated, negatives and junk read as 0).
    # of_counts builds the record without re-running its validators on these clean ints.
    return TokenUsage.of_counts(
        prompt if type(prompt) is int and prompt >= 0 else _count(prompt),
        completion if type(completion) is int and completion >= 0 else _count(completion),
        0
        if reasoning is None
        else reasoning
        if type(reasoning) is int and reasoning >= 0
        else _count(reasoning),
    )


def _first_choice(data: Mapping[str, Any], name: str, redact: Redact) -> Mapping[str, Any]:
    error = data.get("error")
    if error is not None:
        # An HTTP 200 whose body carries an error (OpenRouter, after the model started).
        raise body_error(name, error, redact)
    choices = data.get("choices")
    if (
        not isinstance(choices, list)
        or not choices
        or (type(choices[0]) is not dict and not isinstance(choices[0], Mapping))
    ):
        raise ProviderUnavailableError(f"{name}: response has no choices")
    choice = choices[0]
    error = choice.get("error")
    if error is not None and isinstance(error, Mapping):
        raise body_error(name, error, redact)
    if choice.get("finish_reason") == "error":
        raise ProviderUnavailableError(f"{name}: generation ended with an error")
    return choice


def _metadata(data: Mapping[str, Any], choice: Mapping[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    # Written out rather than looped over: this runs once per response on the hot path.
    value = data.get("model")
    if isinstance(value, str) and value:
        metadata["served_model"] = value
    value = data.get("provider")
    if isinstance(value, str) and value:
        metadata["provider"] = value
    value = data.get("id")
    if isinstance(value, str) and value:
        metadata["response_id"] = value
    value = choice.get("native_finish_reason")
    if isinstance(value, str) and value:
        metadata["native_finish_reason"] = value
    return metadata


def parse_chat(
    data: Mapping[str, Any],
    *,
    name: str = "openai",
    redact: Redact = keep_text,
    split_inline: bool = True,
    missing_finish: FinishReason = FinishReason.OTHER,
) -> Reply:
    """Normalize a chat-completions response body.

    Args:
        data: the response body.
        name: the name errors are reported under.
        redact: removes the key from error messages.
        split_inline: take an inline ``<think>`` block out of the content as the reasoning
            (when the server returned none separately); False leaves the content as written.
        missing_finish: the finish reason of a choice without one (some local servers leave
            it out of a normal stop).

    Raises:
        ProviderError: an error body or choice (the class its code stands for); a body without
            choices or message, or a generation that ended with an error (retryable).
    """
    choice = _first_choice(data, name, redact)
    message = choice.get("message")
    if type(message) is not dict and not isinstance(message, Mapping):
        raise ProviderUnavailableError(f"{name}: response choice has no message")
    raw_finish = choice.get("finish_reason")
    if raw_finish is None:
        finish = missing_finish
    else:
        finish = FINISH_REASONS.get(str(raw_finish), FinishReason.OTHER)
    content = message.get("content") or ""
    if not isinstance(content, str):
        content = text_of_parts(content)
    reasoning, kind = message_reasoning(message)
    if split_inline and not reasoning and (THINK_OPEN in content or THINK_CLOSE in content):
        reasoning, content = inline_think(content)
        kind = ReasoningKind.RAW if reasoning else ReasoningKind.NONE
    usage_data = data.get("usage") or {}
    cost = (
        usage_data.get("cost")
        if (type(usage_data) is dict or isinstance(usage_data, Mapping))
        else None
    )
    metadata = _metadata(data, choice)
    if finish is FinishReason.OTHER and raw_finish is not None:
        metadata.setdefault("native_finish_reason", str(raw_finish))
    # Every field is of its type here (content and reasoning are str): built without attrs'
    # keyword handling, once per response.
    return _trusted_reply(
        reasoning,
        content,
        kind if reasoning else ReasoningKind.NONE,
        finish,
        usage_of(usage_data),
        float(cost) if isinstance(cost, _NUMBER) and cost >= 0 else None,
        metadata,
    )


def parse_text(
    data: Mapping[str, Any], *, name: str = "openai", redact: Redact = keep_text
) -> Reply:
    """Normalize a (text) completions response body: its ``text`` is the answer, as written.

    Raises:
        ProviderError: as :func:`parse_chat`.
    """
    choice = _first_choice(data, name, redact)
    raw_finish = choice.get("finish_reason")
    finish = (
        FINISH_REASONS.get(str(raw_finish), FinishReason.OTHER)
        if raw_finish is not None
        else FinishReason.STOP
    )
    return _trusted_reply(
        "",
        str(choice.get("text") or ""),
        ReasoningKind.NONE,
        finish,
        usage_of(data.get("usage")),
        None,
        _metadata(data, choice),
    )


def bearer_headers(api_key: Secret | None) -> dict[str, str]:
    """The ``Authorization: Bearer`` header for ``api_key`` (none without a key)."""
    return {} if api_key is None else {"authorization": f"Bearer {api_key.reveal()}"}


class ChatStream:
    """Assembles a streamed chat completion (``chat.completion.chunk`` events) into the body a
    non-streamed request would have returned, so one parser reads both.

    Content, ``reasoning``/``reasoning_content`` and ``reasoning_details`` deltas are joined;
    the finish reason comes from the last choice that has one and ``usage`` (with OpenRouter's
    ``cost``) from the final chunk. An ``error`` object in a chunk (OpenRouter's mid-stream
    errors) raises the error it stands for.

    Args:
        name: the name errors are reported under (or, deprecated, the teacher or client whose
            ``name`` and ``_redact`` to use).
        redact: removes the key from error messages.
    """

    def __init__(self, name: Any = "openai", redact: Redact | None = None) -> None:
        self._name, self._redact = stream_identity(name, redact, "openai")
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
        chunk = event_object(self._name, event, data)
        self.chunks += 1
        if chunk.get("error") is not None:
            raise body_error(self._name, chunk["error"], self._redact)
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
            raise body_error(self._name, choice["error"], self._redact)
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
                f"{self._name}: stream ended without a finish reason ({self.chunks} chunks)"
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


class OpenAICompatibleSampler(RemoteModelClient):
    """Samples a model served behind an OpenAI-compatible API.

    Args:
        model: the served model id (a LoRA adapter's served name on vLLM/SGLang).
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        api_key: the key, or None to read ``api_key_env`` (a local server may need none).
        api_key_env: the environment variable holding the key.
        max_concurrency: requests in flight at once.
        timeout_s: the limit of one request.
        retry: how retryable failures are retried.
        send_top_k: send ``top_k`` (vLLM, SGLang and OpenRouter take it; OpenAI's own API
            rejects it).
        max_tokens_field: the body field for ``max_tokens``.
        include_reasoning: when the server returns the reasoning separately
            (``reasoning_content`` or ``reasoning``), put it back in front of the answer as a
            ``<think>`` block, so format checks see what the model wrote.
        extra_body: fields merged into every request body.
        renderer: render chat prompts with this chat renderer (the one the student was trained
            with) and send them as text to ``/completions``, so the served model sees exactly
            the trained format instead of the server's own chat template.
        split_inline: take an inline ``<think>`` block out of a chat answer's content as the
            reasoning (what a teacher stores); False (evaluation) keeps the text as written.
        missing_finish: the finish reason of a choice without one (evaluation: ``STOP``, as
            local servers leave it out of a normal stop; a teacher records ``OTHER``).
        transport: an ``httpx.AsyncBaseTransport`` (tests) or None for the fastest available.
        **kwargs: other :class:`~tracedistill.clients.remote.RemoteModelClient` arguments
            (``stream`` for chat prompts, ``idle_timeout``, ``headers``).
    """

    name = "openai"
    #: ``reply`` is one JSON POST (or one stream): the transport can bound the attempt
    reply_is_one_post = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | Secret | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        send_top_k: bool = True,
        max_tokens_field: str = "max_tokens",
        include_reasoning: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        renderer: ChatRenderer | None = None,
        split_inline: bool = False,
        missing_finish: FinishReason = FinishReason.STOP,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model, base_url=base_url, api_key=resolve_secret(api_key, api_key_env), **kwargs
        )
        self.split_inline = split_inline
        self.missing_finish = missing_finish
        self.send_top_k = send_top_k
        self.max_tokens_field = max_tokens_field
        self.include_reasoning = include_reasoning
        self.extra_body = dict(extra_body or {})
        self.renderer = renderer

    def _auth_headers(self) -> dict[str, str]:
        return bearer_headers(self._api_key)

    def describe(self) -> Mapping[str, Any]:
        """Backend, model and endpoint (never the key)."""
        info = dict(super().describe())
        if self.renderer is not None:
            info["chat_format"] = str(self.renderer.format)
        return info

    def _rendered(self, prompt: Prompt, params: SamplingParams) -> tuple[Prompt, SamplingParams]:
        """A chat prompt as the renderer's text, with the format's stop strings added."""
        if self.renderer is None or isinstance(prompt, str):
            return prompt, params
        generation = self.renderer.generation_prompt(prompt)
        stops = (
            *generation.stop_strings,
            *(s for s in params.stop if s not in generation.stop_strings),
        )
        return generation.text, attrs.evolve(params, stop=stops)

    def body(self, prompt: Prompt, params: SamplingParams | None) -> dict[str, Any]:
        """The JSON body sent for one prompt (``params`` None: the server's defaults)."""
        return chat_body(
            self.model,
            prompt,
            params,
            max_tokens_field=self.max_tokens_field,
            send_top_k=self.send_top_k,
            extra_body=self.extra_body,
        )

    async def reply(
        self, prompt: Prompt, params: SamplingParams | None, *, observe: Observer | None = None
    ) -> Reply:
        """One request for ``prompt`` (rendered first when a renderer is set): the parsed answer.

        Raises:
            ProviderError: by HTTP status, by an error in the body or stream (the class its code
                stands for); connection errors, stalls and malformed answers as retryable.
        """
        if params is not None and self.renderer is not None:
            prompt, params = self._rendered(prompt, params)
        chat = not isinstance(prompt, str)
        if chat and self.stream:
            data = await self._post(prompt, params, observe)
        else:
            # _post's whole-body path, written out: one coroutine frame fewer per attempt.
            path = "/chat/completions" if chat else "/completions"
            data, _headers = await self.post_json(path, self.body(prompt, params), observe=observe)
        return self.reply_of(data, chat=chat)

    async def _attempt(self, prompt: Prompt, params: SamplingParams) -> Completion:
        prompt, params = self._rendered(prompt, params)
        data = await self._post(prompt, params, None)
        return cut_completion(self.parse(data, chat=not isinstance(prompt, str)), params.stop)

    async def _post(
        self, prompt: Prompt, params: SamplingParams | None, observe: Observer | None
    ) -> Mapping[str, Any]:
        """Send ``prompt`` (chat messages or rendered text); the answer's body, streams joined."""
        body = self.body(prompt, params)
        chat = not isinstance(prompt, str)
        if chat and self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
            sink = ChatStream(self.name, self.redact)
            await self.post_stream("/chat/completions", body, sink, observe=observe)
            return sink.response()
        path = "/chat/completions" if chat else "/completions"
        data, _headers = await self.post_json(path, body, observe=observe)
        return data

    def reply_of(self, data: Mapping[str, Any], *, chat: bool = True) -> Reply:
        """Normalize a (chat) completions response body into a :class:`Reply`.

        Raises:
            ProviderError: an error body or choice; a body without choices.
        """
        if chat:
            return parse_chat(
                data,
                name=self.name,
                redact=self.redact,
                split_inline=self.split_inline,
                missing_finish=self.missing_finish,
            )
        return parse_text(data, name=self.name, redact=self.redact)

    def parse(self, data: Mapping[str, Any], *, chat: bool = True) -> Completion:
        """Normalize a (chat) completions response body into the completion's whole text."""
        reply = self.reply_of(data, chat=chat)
        text = reply.answer
        if self.include_reasoning and reply.reasoning:
            text = f"{THINK_OPEN}\n{reply.reasoning}\n{THINK_CLOSE}\n\n{text}"
        usage = data.get("usage")
        counts = usage if isinstance(usage, Mapping) else {}
        return Completion(
            text=text,
            finish_reason=reply.finish_reason,
            prompt_tokens=_reported(counts.get("prompt_tokens")),
            completion_tokens=_reported(counts.get("completion_tokens")),
        )


def _reported(value: Any) -> int | None:
    return int(value) if isinstance(value, _NUMBER) and value >= 0 else None
