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
import random
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.to_thread
import httpx

from tracedistill._secrets import Secret
from tracedistill.clients.base import Completion, ModelClient, Prompt, SamplerError
from tracedistill.clients.http import HttpClient, TransportFactory
from tracedistill.clients.retry import RetryPolicy
from tracedistill.errors import ConfigurationError, ProviderError
from tracedistill.records import SamplingParams

__all__ = ["RemoteModelClient"]

log = logging.getLogger(__name__)


class RemoteModelClient(HttpClient, ModelClient):
    """A model client that POSTs JSON to an HTTP API, retrying what is worth retrying.

    A backend implements :meth:`_attempt` (one request, one completion, or a
    :class:`~tracedistill.errors.ProviderError`); this class bounds concurrency, retries
    408/429/5xx, dropped connections and stalls with back-off, and stops on 401/402/403.

    Args:
        model: what is sampled (the served model id).
        base_url: the API root.
        api_key: the key, already resolved (None: none is sent).
        max_concurrency: requests in flight at once.
        timeout_s: the limit of one request (with ``stream``: the wait for the answer to start).
        retry: how retryable failures are retried.
        transport: an ``httpx.AsyncBaseTransport`` or a factory of one (tests), or None for
            the fastest available.
        stream: ask for server-sent events (see :class:`~tracedistill.clients.http.HttpClient`).
        idle_timeout: with ``stream``, the longest silence between two events (seconds).
        headers: extra HTTP headers sent with every request.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: Secret | None,
        max_concurrency: int = 32,
        timeout_s: float = 600.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | TransportFactory | None = None,
        stream: bool = False,
        idle_timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
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
            max_connections=max(max_concurrency, 8),
            stream=stream,
            idle_timeout=idle_timeout,
            max_concurrency=max_concurrency,
        )

    def describe(self) -> Mapping[str, Any]:
        """Backend, model and endpoint (never the key)."""
        return {"backend": self.name, "model": self.model, "base_url": self.base_url}

    async def start(self) -> None:
        """Create the HTTP client now (importing its transport off the event loop)."""
        if self._transport is None:
            for module in ("aiohttp", "httpx_aiohttp"):
                with contextlib.suppress(ImportError):
                    await anyio.to_thread.run_sync(importlib.import_module, module)
        self._get_client()

    async def _sample(self, prompt: Prompt, params: SamplingParams) -> Completion:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(prompt, params)
            except ProviderError as exc:
                if not self.retry.should_retry(exc, attempt):
                    raise SamplerError(
                        f"{self.name} {self.model}: {exc} (after {attempt} attempt(s))",
                        fatal=exc.fatal,
                    ) from exc
                wait = self.retry.delay(attempt, exc.retry_after, random.Random())
                log.debug("%s: retry %d in %.2fs after %s", self.model, attempt, wait, exc)
                await anyio.sleep(wait)

    @abc.abstractmethod
    async def _attempt(self, prompt: Prompt, params: SamplingParams) -> Completion:
        """One request for ``prompt``; its completion, or the ProviderError it failed with."""
