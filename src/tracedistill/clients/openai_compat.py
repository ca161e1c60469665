"""A sampler behind any OpenAI-compatible endpoint (vLLM, SGLang, OpenRouter, OpenAI).

Chat prompts go to ``POST {base_url}/chat/completions``, raw-text prompts to ``POST
{base_url}/completions``. A LoRA adapter served by vLLM or SGLang is sampled by passing its
served name as ``model``. Retries and error classes are the teachers' (:mod:`tracedistill.
clients.retry`): 408/429/5xx and dropped connections are retried with back-off, 401/402/403
stop the evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
from collections.abc import Mapping
from typing import Any

import anyio
import attrs
import httpx
import orjson

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.chat import ChatRenderer
from tracedistill.clients.base import Completion, Prompt, Sampler, SamplerError
from tracedistill.clients.http import default_transport
from tracedistill.clients.ratelimit import parse_retry_after
from tracedistill.clients.retry import RetryPolicy, error_for_status
from tracedistill.errors import (
    ConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from tracedistill.records import FinishReason, ReasoningKind, SamplingParams

__all__ = ["FINISH_REASONS", "OpenAICompatibleSampler", "message_reasoning", "text_of_parts"]

log = logging.getLogger(__name__)

#: OpenAI-style ``finish_reason`` values (the sampler's and the OpenAI-compatible teacher's).
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
            if not isinstance(item, Mapping):
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


def _finish(value: Any) -> FinishReason:
    # Some local servers leave finish_reason out of a normal stop.
    return (
        FINISH_REASONS.get(str(value), FinishReason.OTHER)
        if value is not None
        else FinishReason.STOP
    )


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and value >= 0 else None


class OpenAICompatibleSampler(Sampler):
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
        transport: an ``httpx.AsyncBaseTransport`` (tests) or None for the fastest available.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | Secret | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 32,
        timeout_s: float = 600.0,
        retry: RetryPolicy | None = None,
        send_top_k: bool = True,
        max_tokens_field: str = "max_tokens",
        include_reasoning: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        renderer: ChatRenderer | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency)
        if not model:
            raise ConfigurationError("OpenAICompatibleSampler needs a model name")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https://: {base_url!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._api_key = resolve_secret(api_key, api_key_env)
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.send_top_k = send_top_k
        self.max_tokens_field = max_tokens_field
        self.include_reasoning = include_reasoning
        self.extra_body = dict(extra_body or {})
        self.renderer = renderer
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: object = None

    def describe(self) -> Mapping[str, Any]:
        """Backend, model and endpoint (never the key)."""
        info: dict[str, Any] = {
            "backend": self.name,
            "model": self.model,
            "base_url": self.base_url,
        }
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

    def _redact(self, text: str) -> str:
        return self._api_key.redact(text) if self._api_key is not None else text

    def _get_client(self) -> httpx.AsyncClient:
        try:
            loop: object = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._client is not None and self._client_loop is loop:
            return self._client
        transport = self._transport or default_transport(max(self.max_concurrency, 8))
        headers = {"content-type": "application/json"}
        if self._api_key is not None:
            headers["authorization"] = f"Bearer {self._api_key.reveal()}"
        self._client = httpx.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=min(30.0, self.timeout_s)),
        )
        self._client_loop = loop
        return self._client

    async def start(self) -> None:
        """Create the HTTP client now (importing its transport off the event loop)."""
        if self._transport is None:
            with contextlib.suppress(ImportError):
                await anyio.to_thread.run_sync(importlib.import_module, "httpx_aiohttp")
        self._get_client()

    def body(self, prompt: Prompt, params: SamplingParams) -> dict[str, Any]:
        """The JSON body sent for one prompt."""
        body: dict[str, Any] = {"model": self.model}
        if isinstance(prompt, str):
            body["prompt"] = prompt
        else:
            body["messages"] = [m.to_dict() for m in prompt]
        body[self.max_tokens_field] = params.max_tokens
        body["temperature"] = params.temperature
        if params.top_p != 1.0:
            body["top_p"] = params.top_p
        if params.top_k is not None and self.send_top_k:
            body["top_k"] = params.top_k
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(self.extra_body)
        body.update(params.extra)
        return body

    async def _sample(self, prompt: Prompt, params: SamplingParams) -> Completion:
        prompt, params = self._rendered(prompt, params)
        path = "/completions" if isinstance(prompt, str) else "/chat/completions"
        body = orjson.dumps(self.body(prompt, params))
        attempt = 0
        while True:
            attempt += 1
            try:
                data = await self._post(path, body)
                completion = self.parse(data, chat=not isinstance(prompt, str))
                return _cut_at_stop(completion, params.stop)
            except ProviderError as exc:
                if not self.retry.should_retry(exc, attempt):
                    raise SamplerError(
                        f"{self.name} {self.model}: {exc} (after {attempt} attempt(s))",
                        fatal=exc.fatal,
                    ) from exc
                wait = self.retry.delay(attempt, exc.retry_after, random.Random())
                log.debug("%s: retry %d in %.2fs after %s", self.model, attempt, wait, exc)
                await anyio.sleep(wait)

    async def _post(self, path: str, body: bytes) -> dict[str, Any]:
        client = self._get_client()
        try:
            response = await client.post(self.base_url + path, content=body)
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(f"request timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"connection error ({type(exc).__name__}: {self._redact(str(exc))[:200]})"
            ) from None
        try:
            data: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        status = response.status_code
        if status >= 400:
            message = self._redact(_error_message(data, response.text))
            raise error_for_status(
                status,
                f"HTTP {status}: {message[:500]}",
                provider_message=message,
                retry_after=parse_retry_after(response.headers),
            )
        if not isinstance(data, dict):
            raise ProviderUnavailableError(
                f"HTTP {status} with a body that is not a JSON object ({len(response.content)} "
                "bytes)"
            )
        error = data.get("error")
        if error is not None:
            # OpenRouter reports failures after the model started as HTTP 200 with an error body.
            message = self._redact(_error_message(data, ""))
            code = error.get("code") if isinstance(error, dict) else None
            status = int(code) if isinstance(code, int | str) and str(code).isdigit() else 502
            raise error_for_status(
                status, f"error in response body: {message[:500]}", provider_message=message
            )
        return data

    def parse(self, data: Mapping[str, Any], *, chat: bool = True) -> Completion:
        """Normalize a (chat) completions response body."""
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ProviderUnavailableError("response has no choices")
        choice = choices[0]
        if chat:
            message = choice.get("message") or {}
            text = text_of_parts(message.get("content"))
            reasoning, _ = message_reasoning(message)
            if self.include_reasoning and reasoning:
                text = f"<think>\n{reasoning}\n</think>\n\n{text}"
        else:
            text = str(choice.get("text") or "")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        return Completion(
            text=text,
            finish_reason=_finish(choice.get("finish_reason")),
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
        )

    async def aclose(self) -> None:
        """Close the HTTP client (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()


def _error_message(data: Any, text: str) -> str:
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return text.strip()[:500] or "(empty body)"


def _cut_at_stop(completion: Completion, stops: tuple[str, ...]) -> Completion:
    """Cut a completion at its first stop string (for servers that return it)."""
    cut = min((i for i in (completion.text.find(s) for s in stops if s) if i >= 0), default=-1)
    if cut < 0:
        return completion
    return attrs.evolve(completion, text=completion.text[:cut], finish_reason=FinishReason.STOP)
