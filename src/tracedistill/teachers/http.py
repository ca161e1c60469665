"""The base of the teachers that talk to an HTTP API (OpenAI-compatible, Anthropic)."""

from __future__ import annotations

from tracedistill.clients.http import HttpClient
from tracedistill.teachers.base import Teacher

__all__ = ["HttpTeacher"]


class HttpTeacher(HttpClient, Teacher):
    """A teacher that POSTs JSON to an HTTP API (base of the OpenAI-compatible and Anthropic ones).

    Args:
        base_url: the API root.
        api_key: the key (a :class:`~tracedistill._secrets.Secret`, a string, or None to use
            the environment variable of the backend).
        transport: an ``httpx.AsyncBaseTransport`` or a factory of one (default:
            :func:`~tracedistill.clients.http.default_transport`); tests pass
            ``httpx.MockTransport`` or a loopback one.
        headers: extra HTTP headers sent with every request.
        max_connections: the connection pool size.
        stream: ask for the answer as server-sent events (see the backend's ``stream``).
        idle_timeout: with ``stream=True``, the longest silence (seconds) between two events or
            keep-alive comments before the attempt counts as stalled and is retried.
        **kwargs: the :class:`~tracedistill.teachers.base.Teacher` arguments.
    """
