"""The base of the model clients behind an HTTP API (OpenAI-compatible, Anthropic).

One transport path for everything that talks HTTP:
:class:`~tracedistill.clients.http.HttpClient` (the fast aiohttp POST path, errors mapped to
their classes, rate-limit headers, server-sent events), with retries by error class around
each sample.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import logging
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.to_thread
import httpx

from tracedistill._secrets import Secret
from tracedistill.clients.base import (
    Completion,
    ModelClient,
    Observer,
    Prompt,
    Reply,
    SamplerError,
)
from tracedistill.clients.http import HttpClient, TransportFactory
from tracedistill.clients.retry import RetryPolicy, retry_call
from tracedistill.errors import ConfigurationError, ProviderError
from tracedistill.records import SamplingParams

__all__ = ["RemoteModelClient"]

log = logging.getLogger(__name__)


class RemoteModelClient(HttpClient, ModelClient):
    """A model client that POSTs JSON to an HTTP API, retrying what is worth retrying.

    A backend implements :meth:`reply` (one request, the provider's parsed answer, or a
    :class:`~tracedistill.errors.ProviderError`): the teachers call it once per attempt.
    :meth:`~tracedistill.clients.base.ModelClient.sample` (the evaluator's call) bounds
    concurrency and retries 408/429/5xx, dropped connections and stalls with back-off through
    :func:`~tracedistill.clients.retry.retry_call`, and stops on 401/402/403.

    Args:
        model: what is sampled (the served model id).
        base_url: the API root.
        api_key: the key, already resolved (None: none is sent).
        max_concurrency: requests in flight at once.
        timeout_s: the limit of one request (with ``stream``: the wait for the answer to start);
            None for none.
        retry: how retryable failures are retried.
        transport: an ``httpx.AsyncBaseTransport`` or a factory of one (tests), or None for
            the fastest available.
        stream: ask for server-sent events (see :class:`~tracedistill.clients.http.HttpClient`).
        idle_timeout: with ``stream``, the longest silence between two events (seconds).
        headers: extra HTTP headers sent with every request.
        max_connections: the connection pool size (default: ``max_concurrency``, at least 8).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: Secret | None,
        max_concurrency: int = 32,
        timeout_s: float | None = 600.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | TransportFactory | None = None,
        stream: bool = False,
        idle_timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        max_connections: int | None = None,
    ) -> None:
        if not model:
            raise ConfigurationError(f"{type(self).__name__} needs a model name")
        self.model = model
        # HttpClient reads the attempt limit from here.
        self.timeout: float | None = timeout_s
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            transport=transport,
            headers=headers,
            max_connections=max_connections or max(max_concurrency, 8),
            stream=stream,
            idle_timeout=idle_timeout,
            max_concurrency=max_concurrency,
        )

    def describe(self) -> Mapping[str, Any]:
        """Backend, model and endpoint (never the key)."""
        # type(self).name: a teacher's client reports errors under the teacher's name.
        return {"backend": type(self).name, "model": self.model, "base_url": self.base_url}

    async def start(self) -> None:
        """Create the HTTP client now (importing its transport off the event loop)."""
        if self._transport is None:
            for module in ("aiohttp", "httpx_aiohttp"):
                with contextlib.suppress(ImportError):
                    await anyio.to_thread.run_sync(importlib.import_module, module)
        self._get_client()

    async def _sample(self, prompt: Prompt, params: SamplingParams) -> Completion:
        outcome, attempts = await retry_call(
            self.retry, self._attempt, prompt, params, label=f"{self.name} {self.model}"
        )
        if isinstance(outcome, ProviderError):
            raise SamplerError(
                f"{self.name} {self.model}: {outcome} (after {attempts} attempt(s))",
                fatal=outcome.fatal,
            ) from outcome
        return outcome

    @abc.abstractmethod
    async def reply(
        self, prompt: Prompt, params: SamplingParams | None, *, observe: Observer | None = None
    ) -> Reply:
        """One request for ``prompt``: the provider's parsed answer (reasoning apart).

        ``observe`` receives what the response's headers say about rate limits.

        Raises:
            ProviderError: the attempt failed (its class says whether to retry).
        """

    async def _attempt(self, prompt: Prompt, params: SamplingParams) -> Completion:
        """One request for ``prompt`` as the evaluator's completion (see :meth:`reply`)."""
        return (await self.reply(prompt, params)).completion()
