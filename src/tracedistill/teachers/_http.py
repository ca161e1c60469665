"""What the HTTP teachers share: the client, one JSON POST, and errors mapped by status.

The client is httpx's API over a pluggable transport. By default it is httpx-aiohttp's
``AiohttpTransport`` when that package is installed and the loop is asyncio (several times the
throughput of httpx's own transport under concurrency), else httpx's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx
import orjson

from tracedistill._secrets import Secret
from tracedistill.errors import ConfigurationError, ProviderTimeoutError, ProviderUnavailableError
from tracedistill.teachers.base import Observer, Teacher
from tracedistill.teachers.ratelimit import parse_rate_headers, parse_retry_after
from tracedistill.teachers.retry import error_for_status

__all__ = ["HttpTeacher", "default_transport"]

logger = logging.getLogger(__name__)

TransportFactory = Callable[[], httpx.AsyncBaseTransport]


def default_transport(max_connections: int = 1024) -> httpx.AsyncBaseTransport:
    """The fastest transport available for the running event loop."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    if _current_loop() is not None:
        try:
            from httpx_aiohttp import AiohttpTransport
        except ImportError:
            pass
        else:
            return AiohttpTransport(limits=limits)
    return httpx.AsyncHTTPTransport(limits=limits)


_LIMIT_PREFIXES = (b"x-ratelimit-", b"anthropic-ratelimit-", b"retry-after")


def _limit_headers(headers: httpx.Headers) -> dict[str, str]:
    """The rate-limit headers of a response, in one pass (most responses have none)."""
    found: dict[str, str] = {}
    for key, value in headers.raw:
        lowered = key.lower()
        if lowered.startswith(_LIMIT_PREFIXES):
            found[lowered.decode("latin-1")] = value.decode("latin-1")
    return found


def _is_disconnect(exc: BaseException) -> bool:
    # httpx-aiohttp maps a dropped connection to httpx.ConnectTimeout; the cause tells them apart.
    cause = exc.__cause__
    name = type(cause).__name__ if cause is not None else ""
    return "Disconnect" in name or "OSError" in name or "Connection" in name


class HttpTeacher(Teacher):
    """A teacher that POSTs JSON to an HTTP API (base of the OpenAI-compatible and Anthropic ones).

    Args:
        base_url: the API root.
        api_key: the key (a :class:`~tracedistill._secrets.Secret`, a string, or None to use
            the environment variable of the backend).
        transport: an ``httpx.AsyncBaseTransport`` or a factory of one (default:
            :func:`default_transport`); tests pass ``httpx.MockTransport`` or a loopback one.
        headers: extra HTTP headers sent with every request.
        max_connections: the connection pool size.
        **kwargs: the :class:`~tracedistill.teachers.base.Teacher` arguments.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret | None,
        transport: httpx.AsyncBaseTransport | TransportFactory | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._transport = transport
        self._extra_headers = dict(headers or {})
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, httpx.URL] = {}

    # Subclasses add the authentication headers.
    def _auth_headers(self) -> dict[str, str]:
        return {}

    def _redact(self, text: str) -> str:
        return self._api_key.redact(text) if self._api_key is not None else text

    def _get_client(self) -> httpx.AsyncClient:
        loop = _current_loop()
        if self._client is not None and self._client_loop is loop:
            return self._client
        # A client belongs to one event loop; a new loop (a second anyio.run) gets a new client.
        if isinstance(self._transport, httpx.AsyncBaseTransport):
            transport = self._transport
        elif self._transport is not None:
            transport = self._transport()
        else:
            transport = default_transport(self._max_connections)
        headers = dict(self._extra_headers)
        self._client = httpx.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(30.0, self.timeout or 30.0)),
        )
        self._client_loop = loop
        return self._client

    async def _send(
        self,
        method: str,
        path_or_url: str,
        *,
        content: bytes | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        observe: Observer | None = None,
    ) -> httpx.Response:
        """Send one request; return the 2xx response.

        Raises:
            ProviderError: by status; connection errors and timeouts as retryable errors.
        """
        client = self._get_client()
        url = self._urls.get(path_or_url)
        if url is None:
            # Parsed once per path: URL parsing is a visible share of httpx's per-request cost.
            full = path_or_url if "://" in path_or_url else self.base_url + path_or_url
            url = httpx.URL(full)
            if len(self._urls) < 64:
                self._urls[path_or_url] = url
        headers = self._auth_headers()
        if content is not None:
            headers["content-type"] = "application/json"
        try:
            response = await client.request(
                method, url, content=content, files=files, data=data, headers=headers or None
            )
        except httpx.TimeoutException as exc:
            if _is_disconnect(exc):
                raise ProviderUnavailableError(
                    f"{self.name}: connection lost ({type(exc.__cause__).__name__})"
                ) from None
            raise ProviderTimeoutError(
                f"{self.name}: request timed out ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"{self.name}: connection error ({type(exc).__name__}: "
                f"{self._redact(str(exc))[:200]})"
            ) from None
        if observe is not None:
            limits = _limit_headers(response.headers)
            if limits:
                observe(parse_rate_headers(limits))
        status = response.status_code
        if status >= 400:
            try:
                parsed: Any = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                parsed = None
            provider_message = self._redact(self._error_message(parsed, response.text))
            raise error_for_status(
                status,
                f"{self.name}: HTTP {status}: {provider_message[:500]}",
                provider_message=provider_message,
                retry_after=parse_retry_after(response.headers),
            )
        return response

    def _json_object(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise ProviderUnavailableError(
                f"{self.name}: HTTP {response.status_code} with a body that is not a JSON object "
                f"({len(response.content)} bytes)",
                status=response.status_code,
            )
        return data

    async def _post_json(
        self, path: str, body: Mapping[str, Any], *, observe: Observer | None
    ) -> tuple[dict[str, Any], httpx.Headers]:
        """POST ``body``; return the parsed JSON object of a 2xx answer and its headers.

        Raises:
            ProviderError: by status; connection errors and timeouts as retryable errors.
        """
        response = await self._send("POST", path, content=orjson.dumps(body), observe=observe)
        return self._json_object(response), response.headers

    async def _get_json(self, path: str) -> dict[str, Any]:
        """GET a JSON object."""
        return self._json_object(await self._send("GET", path))

    def _error_message(self, data: Any, text: str) -> str:
        """The provider's message in an error body (both OpenAI's and Anthropic's layouts)."""
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict):
                message = error.get("message")
                kind = error.get("type") or error.get("code")
                if message:
                    return f"{kind}: {message}" if kind else str(message)
            elif isinstance(error, str):
                return error
        return text.strip()[:500] or "(empty body)"

    async def aclose(self) -> None:
        """Close the HTTP client (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()


def _current_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None under another backend (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
