"""The base of the teachers that talk to an HTTP API (OpenAI-compatible, Anthropic)."""

from __future__ import annotations

import abc
from typing import Any

import httpx

from tracedistill._secrets import Secret
from tracedistill.clients.http import TransportFactory
from tracedistill.clients.remote import RemoteModelClient
from tracedistill.teachers.base import Teacher
from tracedistill.teachers.client import ClientTeacher

__all__ = ["HttpTeacher"]


class HttpTeacher(ClientTeacher):
    """A teacher on an HTTP model client (base of the OpenAI-compatible and Anthropic ones).

    The teacher builds its client (:meth:`make_client`) from the transport arguments below;
    every attempt is one :meth:`~tracedistill.clients.remote.RemoteModelClient.reply`, and the
    batch APIs use the client's public transport methods, so one connection pool serves both.
    Errors are reported under the teacher's name.

    Args:
        base_url: the API root.
        api_key: the key, already resolved (None: none is sent).
        transport: an ``httpx.AsyncBaseTransport`` or a factory of one (default:
            :func:`~tracedistill.clients.http.default_transport`); tests pass
            ``httpx.MockTransport`` or a loopback one.
        headers: extra HTTP headers sent with every request.
        max_connections: the connection pool size.
        stream: ask for the answer as server-sent events (see the backend's ``stream``). Then
            ``timeout`` bounds the wait for the answer to start and ``idle_timeout`` each
            silence, instead of the whole attempt.
        idle_timeout: with ``stream=True``, the longest silence (seconds) between two events or
            keep-alive comments before the attempt counts as stalled and is retried.
        **kwargs: the :class:`~tracedistill.teachers.base.Teacher` arguments.
    """

    client: RemoteModelClient

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret | None,
        transport: httpx.AsyncBaseTransport | TransportFactory | None = None,
        headers: dict[str, str] | None = None,
        max_connections: int = 1024,
        stream: bool = False,
        idle_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        # The teacher's own arguments first (validated; the client takes its timeout, retry
        # policy and name), then the client: so Teacher.__init__ here, not ClientTeacher's.
        Teacher.__init__(self, **kwargs)
        self._api_key = api_key
        self.client = self.make_client(
            base_url=base_url,
            api_key=api_key,
            transport=transport,
            headers=headers,
            max_connections=max_connections,
            max_concurrency=max_connections,
            stream=stream,
            idle_timeout=idle_timeout,
            timeout_s=self.timeout,
            retry=self.retry,
        )
        self.client.name = self.name
        if self.client.stream:
            # A streamed attempt is bounded by the idle timeout between events instead.
            self.timeout = None

    @abc.abstractmethod
    def make_client(self, **transport: Any) -> RemoteModelClient:
        """The model client of this teacher's model, over ``transport`` (the arguments of
        :class:`~tracedistill.clients.remote.RemoteModelClient`).
        """

    @property
    def base_url(self) -> str:
        """The API root."""
        return self.client.base_url

    @property
    def stream(self) -> bool:
        """Whether answers are asked for as server-sent events."""
        return self.client.stream

    @property
    def idle_timeout(self) -> float:
        """With ``stream``, the longest silence between two events (seconds)."""
        return self.client.idle_timeout

    def _redact(self, text: str) -> str:
        return self.client.redact(text)

    def _client_keeps_deadline(self) -> bool:
        # The client's aiohttp session enforces the attempt limit as its whole-request timeout,
        # when an attempt is that one reply (a subclass's own complete() may wait on more).
        return type(self).complete is _ONE_REPLY and self.client.bounds_replies(self.timeout)


_ONE_REPLY = ClientTeacher.complete
