"""An OpenAI-compatible teacher, with OpenRouter as the default preset.

Works with OpenRouter, OpenAI, vLLM, SGLang and any server that speaks ``POST
/chat/completions``. The protocol (request body, answers with their reasoning fields or inline
``<think>`` block, usage and OpenRouter's cost, HTTP-200 error bodies, streams) is
:mod:`tracedistill.clients.openai_compat`'s, shared with the evaluation's sampler; this module
adds what a teacher adds: prompts and request keys (from the base class), cost, traces and the
OpenAI batch API. The teacher holds an
:class:`~tracedistill.clients.openai_compat.OpenAICompatibleSampler` (its ``client``): each
attempt is one ``client.reply``, and the batch API uses the client's transport.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.clients.http import TransportFactory
from tracedistill.clients.openai_compat import ChatStream, OpenAICompatibleSampler
from tracedistill.clients.retry import error_for_status
from tracedistill.errors import ProviderError, ProviderUnavailableError
from tracedistill.records import FinishReason, SamplingParams
from tracedistill.teachers.base import (
    BatchResult,
    BatchStatus,
    TeacherCompletion,
    TeacherRequest,
)
from tracedistill.teachers.http import HttpTeacher

# ChatStream moved to tracedistill.clients.openai_compat (re-exported here for one release).
__all__ = ["OPENROUTER_BASE_URL", "ChatStream", "OpenAICompatTeacher", "OpenRouterTeacher"]

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

    client: OpenAICompatibleSampler

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
        self.max_tokens_field = max_tokens_field
        self.reports_cost = reports_cost
        self.api_key_env = api_key_env
        super().__init__(
            model=model,
            base_url=base_url,
            api_key=resolve_secret(api_key, api_key_env),
            params=params or DEFAULT_PARAMS,
            transport=transport,
            **kwargs,
        )

    def make_client(self, **transport: Any) -> OpenAICompatibleSampler:
        """The OpenAI-compatible client of this teacher's model, parsing as a teacher stores:
        an inline ``<think>`` block taken out as the reasoning, a missing finish reason kept
        as ``OTHER``.
        """
        return OpenAICompatibleSampler(
            self.model,
            api_key_env=self.api_key_env,
            max_tokens_field=self.max_tokens_field,
            split_inline=True,
            missing_finish=FinishReason.OTHER,
            **transport,
        )

    def body(self, request: TeacherRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        return self.client.body(request.messages, request.params)

    def parse(self, data: Mapping[str, Any]) -> TeacherCompletion:
        """Normalize a chat-completions response body (an error body raises its error)."""
        return self.client.reply_of(data)

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
        client = self.client
        upload = client.json_object(
            await client.send(
                "POST",
                "/files",
                files={"file": ("batch.jsonl", lines, "application/jsonl")},
                data={"purpose": "batch"},
            )
        )
        created, _ = await client.post_json(
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
        data = await self.client.get_json(f"/batches/{batch_id}")
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
            content = (await self.client.send("GET", f"/files/{file_id}/content")).content
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
                message = self._redact(self.client.error_message(body, str(body)))
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
