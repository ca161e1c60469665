"""A Claude teacher over Anthropic's Messages API, with extended thinking.

The protocol (request body, thinking blocks, usage, stop reasons, error bodies, streams) is
:mod:`tracedistill.clients.anthropic`'s, shared with the model client
:class:`~tracedistill.clients.anthropic.AnthropicClient`; this module adds what a teacher adds:
prompts and request keys (from the base class), cost, traces and the Message Batches API. The
teacher holds an :class:`~tracedistill.clients.anthropic.AnthropicClient` (its ``client``): each
attempt is one ``client.reply``, and the batch API uses the client's transport.

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
from tracedistill.clients.anthropic import (
    ANTHROPIC_BASE_URL,
    ANTHROPIC_VERSION,
    AnthropicClient,
    MessageStream,
    error_of,
    thinking_config,
)
from tracedistill.errors import ProviderError, ProviderUnavailableError
from tracedistill.records import SamplingParams
from tracedistill.teachers.base import (
    BatchResult,
    BatchStatus,
    TeacherCompletion,
    TeacherRequest,
)
from tracedistill.teachers.http import HttpTeacher

__all__ = ["ANTHROPIC_BASE_URL", "AnthropicTeacher", "MessageStream"]

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

    client: AnthropicClient

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
        self.thinking = thinking_config(thinking, params)
        if self.thinking is not None and "thinking" not in params.extra:
            params = attrs.evolve(params, extra={**params.extra, "thinking": self.thinking})
        self.summarized_thinking = summarized_thinking
        self.anthropic_version = anthropic_version
        super().__init__(
            model=model,
            base_url=base_url,
            api_key=resolve_secret(api_key, "ANTHROPIC_API_KEY"),
            params=params,
            **kwargs,
        )

    def make_client(self, **transport: Any) -> AnthropicClient:
        """The Messages API client of this teacher's model (thinking is already in the
        teacher's ``params.extra``, so the client adds none).
        """
        return AnthropicClient(
            self.model,
            thinking=None,
            anthropic_version=self.anthropic_version,
            summarized_thinking=self.summarized_thinking,
            **transport,
        )

    def body(self, request: TeacherRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        return self.client.body(request.messages, request.params)

    # --- Message Batches ------------------------------------------------------------------------

    #: batch requests cost this fraction of the regular price (Anthropic: half)
    batch_discount = 0.5

    async def submit_batch(self, requests: Sequence[TeacherRequest]) -> str:
        """Create a Message Batch (``custom_id`` = request key); return its id."""
        data, _ = await self.client.post_json(
            "/v1/messages/batches",
            {"requests": [{"custom_id": r.key, "params": self.body(r)} for r in requests]},
            observe=None,
        )
        return str(data["id"])

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        """Return where a batch stands."""
        data = await self.client.get_json(f"/v1/messages/batches/{batch_id}")
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
        content = (await self.client.send("GET", str(url))).content
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
            return error_of(self.name, (result.get("error") or {}).get("error") or {}, self._redact)
        return ProviderUnavailableError(f"{self.name}: batch request {kind}")

    def parse(self, data: Mapping[str, Any]) -> TeacherCompletion:
        """Normalize a Messages API response body (an error body raises its error)."""
        return self.client.reply_of(data)
