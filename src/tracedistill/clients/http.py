"""What the HTTP teachers share: the client, one JSON POST, and errors mapped by status.

The client is httpx's API over a pluggable transport. By default it is httpx-aiohttp's
``AiohttpTransport`` when that package is installed and the loop is asyncio (several times the
throughput of httpx's own transport under concurrency), else httpx's own. With the default,
JSON POSTs and streams go straight to the aiohttp session under that transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import anyio
import httpx
import orjson

from tracedistill._secrets import Secret
from tracedistill.clients._aiohttp import AiohttpPoster, Prebuilt
from tracedistill.clients.base import Observer
from tracedistill.clients.ratelimit import parse_rate_headers, parse_retry_after
from tracedistill.clients.retry import error_body_code, error_for_status
from tracedistill.clients.sse import SSEDecoder
from tracedistill.errors import (
    ConfigurationError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)

__all__ = ["EventSink", "HttpClient", "TransportFactory", "default_transport"]

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
_LIMIT_PREFIXES_TEXT = tuple(prefix.decode() for prefix in _LIMIT_PREFIXES)


# The first byte of every name in _LIMIT_PREFIXES, in either case.
_LIMIT_FIRST = frozenset(
    bytes([c]) for prefix in _LIMIT_PREFIXES for c in prefix[:1].upper() + prefix[:1]
)


def _limit_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """The rate-limit headers of a response, in one pass (most responses have none)."""
    found: dict[str, str] = {}
    for key, value in raw:
        # A name whose first byte starts no prefix (most of a provider's 15-20 headers) is
        # passed over without lowering it: half the cost per header.
        if key[:1] in _LIMIT_FIRST:
            lowered = key.lower()
            if lowered.startswith(_LIMIT_PREFIXES):
                found[lowered.decode("latin-1")] = value.decode("latin-1")
    return found


def _body_limit_headers(parsed: Any) -> dict[str, str]:
    """Rate-limit headers inside an error body, lower-cased (else empty).

    OpenRouter passes the limiting provider's headers on as ``error.metadata.headers`` in a 429
    body (``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` in epoch ms),
    often without sending them as headers of the response.
    """
    error = parsed.get("error") if isinstance(parsed, dict) else None
    metadata = error.get("metadata") if isinstance(error, dict) else None
    headers = metadata.get("headers") if isinstance(metadata, dict) else None
    if not isinstance(headers, dict):
        return {}
    found: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or isinstance(value, bool):
            continue
        if not isinstance(value, str | int | float):
            continue
        lowered = key.lower()
        if lowered.startswith(_LIMIT_PREFIXES_TEXT):
            found[lowered] = str(value)
    return found


def _is_disconnect(exc: BaseException) -> bool:
    # httpx-aiohttp maps a dropped connection to httpx.ConnectTimeout; the cause tells them apart.
    cause = exc.__cause__
    name = type(cause).__name__ if cause is not None else ""
    return "Disconnect" in name or "OSError" in name or "Connection" in name


class EventSink(Protocol):
    """Where a streamed response's events go: a backend's accumulator of one answer."""

    #: True once the stream's final event arrived (nothing after it is read)
    done: bool

    def feed(self, event: str, data: bytes) -> None:
        """Take one event (its name and data); raise a ProviderError for an error event."""

    def ended(self) -> bool:
        """Whether the answer is whole although the stream closed without its final event."""


class HttpClient:
    """JSON POSTs (plain or streamed) to an HTTP API, with errors mapped to their classes.

    A cooperative base: the class it is combined with (a
    :class:`~tracedistill.teachers.Teacher`) sets ``name`` and ``timeout`` and takes the other
    keyword arguments.

    Args:
        base_url: the API root.
        api_key: the key (a :class:`~tracedistill._secrets.Secret`, a string, or None to use
            the environment variable of the backend).
        transport: an ``httpx.AsyncBaseTransport`` or a factory of one (default:
            :func:`default_transport`); tests pass ``httpx.MockTransport`` or a loopback one.
        headers: extra HTTP headers sent with every request.
        max_connections: the connection pool size.
        stream: ask for the answer as server-sent events (see the backend's ``stream``).
            With streaming, ``timeout`` bounds the wait for the response to start and
            ``idle_timeout`` each silence between two events; an answer that keeps sending
            events is never cut, however long it takes.
        idle_timeout: with ``stream=True``, the longest silence (seconds) between two events or
            keep-alive comments before the attempt counts as stalled and is retried.
        **kwargs: the arguments of the class combined with this one.
    """

    #: the name errors are reported under (set by the combined class)
    name: str
    #: seconds an attempt may take, None for no limit (set by the combined class)
    timeout: float | None
    #: whether the backend's ``reply`` is one :meth:`post_json` and nothing else that waits,
    #: so that the transport's whole-request deadline bounds the whole attempt
    reply_is_one_post: ClassVar[bool] = False

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret | None,
        transport: httpx.AsyncBaseTransport | TransportFactory | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 1024,
        stream: bool = False,
        idle_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https://: {base_url!r}")
        if not isinstance(idle_timeout, int | float) or idle_timeout <= 0:
            raise ConfigurationError(f"idle_timeout must be > 0 seconds, got {idle_timeout!r}")
        self.stream = bool(stream)
        self.idle_timeout = float(idle_timeout)
        #: bounds connecting and the wait for the response headers (``timeout`` as given)
        self.start_timeout = self.timeout
        if self.stream:
            # The whole attempt is bounded by the idle timeout between events instead.
            self.timeout = None
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._transport = transport
        self._extra_headers = dict(headers or {})
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, httpx.URL] = {}
        self._url_texts: dict[str, str] = {}
        # The JSON POSTs (the hot path) go straight to the client's transport when no proxy is
        # configured: httpx's client layer (request merging, auth and redirect flows, cookie
        # extraction) was most of the client's CPU per request and none of it is used here.
        self._direct: httpx.AsyncBaseTransport | None = None
        self._prebuilt: Prebuilt | None = None
        # With the default transport, JSON POSTs skip httpx's request and response objects too:
        # a bare aiohttp session (the one under httpx-aiohttp's transport) sends them.
        self._poster: AiohttpPoster | None = None

    # Subclasses add the authentication headers.
    def _auth_headers(self) -> dict[str, str]:
        return {}

    def redact(self, text: str) -> str:
        """``text`` without the API key."""
        return self._api_key.redact(text) if self._api_key is not None else text

    def _get_client(self) -> httpx.AsyncClient:
        loop = _current_loop()
        if self._client is not None and self._client_loop is loop:
            return self._client
        # A client belongs to one event loop; a new loop (a second anyio.run) gets a new client.
        transport: httpx.AsyncBaseTransport | None = None
        if isinstance(self._transport, httpx.AsyncBaseTransport):
            transport = self._transport
        elif self._transport is not None:
            transport = self._transport()
        timeout = httpx.Timeout(self.start_timeout, connect=min(30.0, self.start_timeout or 30.0))
        proxied = bool(urllib.request.getproxies())
        self._poster = None
        if self._transport is None and not proxied and loop is not None:
            self._poster = AiohttpPoster.create(self._max_connections, timeout, self.timeout)
        if self._poster is not None:
            transport = self._poster.transport
        elif self._transport is None:
            transport = default_transport(self._max_connections)
        headers = dict(self._extra_headers)
        self._client = httpx.AsyncClient(transport=transport, headers=headers, timeout=timeout)
        self._client_loop = loop
        # Proxies from the environment are mounted by the client: then every request uses it.
        self._direct = None if proxied else transport
        self._prebuilt = None
        return self._client

    def bounds_replies(self, timeout: float | None) -> bool:
        """Whether a reply started now in this event loop is cut by the transport itself once
        it has taken ``timeout`` seconds in all (waiting for a connection, sending, reading).

        True only for a backend whose reply is one JSON POST (:attr:`reply_is_one_post`) on the
        bare aiohttp path, once its session exists: a teacher then needs no deadline of its own.
        """
        poster = self._poster
        return (
            self.reply_is_one_post
            and timeout is not None
            and poster is not None
            and poster.total == timeout
            and self._client_loop is _current_loop()
        )

    def _prebuilt_headers(self, client: httpx.AsyncClient) -> Prebuilt:
        """The headers of a JSON POST (client defaults, extra headers, auth), built once."""
        if self._prebuilt is None:
            headers = httpx.Headers(client.headers)
            headers.update(self._auth_headers())
            headers["content-type"] = "application/json"
            timeout = client.timeout.as_dict()
            self._prebuilt = Prebuilt(headers, {"timeout": timeout})
        return self._prebuilt

    async def _post_direct(
        self, client: httpx.AsyncClient, url: httpx.URL, content: bytes, *, stream: bool
    ) -> httpx.Response:
        """POST through the transport itself (see ``_direct``); read the body unless streaming."""
        transport = self._direct
        assert transport is not None
        prebuilt = self._prebuilt_headers(client)
        request = httpx.Request(
            "POST", url, headers=prebuilt.headers, content=content, extensions=prebuilt.extensions
        )
        response = await transport.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    def _url(self, path_or_url: str) -> httpx.URL:
        url = self._urls.get(path_or_url)
        if url is None:
            # Parsed once per path: URL parsing is a visible share of httpx's per-request cost.
            full = path_or_url if "://" in path_or_url else self.base_url + path_or_url
            url = httpx.URL(full)
            if len(self._urls) < 64:
                self._urls[path_or_url] = url
        return url

    @contextlib.contextmanager
    def _transport_errors(self, what: str = "request") -> Iterator[None]:
        """Turn httpx's transport errors into retryable provider errors."""
        try:
            yield
        except httpx.TimeoutException as exc:
            if _is_disconnect(exc):
                raise ProviderUnavailableError(
                    f"{self.name}: connection lost ({type(exc.__cause__).__name__})"
                ) from None
            raise ProviderTimeoutError(
                f"{self.name}: {what} timed out ({type(exc).__name__})"
            ) from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise ProviderUnavailableError(
                f"{self.name}: connection error during the {what} ({type(exc).__name__}: "
                f"{self.redact(str(exc))[:200]})"
            ) from None

    def _check(self, response: httpx.Response, observe: Observer | None) -> None:
        """Report the rate-limit headers; raise the error an HTTP error status stands for."""
        status = response.status_code
        content = response.content if status >= 400 else b""  # a 2xx stream is not read yet
        self._check_parts(status, _limit_headers(response.headers.raw), content, observe)

    def _check_parts(
        self, status: int, limits: dict[str, str], content: bytes, observe: Observer | None
    ) -> None:
        parsed: Any = None
        if status >= 400:
            try:
                parsed = orjson.loads(content)
            except orjson.JSONDecodeError:
                parsed = None
            # The response's own headers win over the copies an error body carries.
            limits = {**_body_limit_headers(parsed), **limits}
        if observe is not None and limits:
            observe(parse_rate_headers(limits))
        if status >= 400:
            text = content.decode("utf-8", "replace")
            provider_message = self.redact(self.error_message(parsed, text))
            raise error_for_status(
                status,
                f"{self.name}: HTTP {status}: {provider_message[:500]}",
                provider_message=provider_message,
                retry_after=parse_retry_after(limits),
                code=error_body_code(parsed),
            )

    def _headers(self, json_body: bool) -> dict[str, str] | None:
        headers = self._auth_headers()
        if json_body:
            headers["content-type"] = "application/json"
        return headers or None

    async def send(
        self,
        method: str,
        path_or_url: str,
        *,
        content: bytes | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        observe: Observer | None = None,
    ) -> httpx.Response:
        """Send one request (a path under ``base_url`` or a full URL); return the 2xx response.

        Raises:
            ProviderError: by status; connection errors and timeouts as retryable errors.
        """
        client = self._get_client()
        url = self._url(path_or_url)
        with self._transport_errors():
            if self._direct is not None and method == "POST" and content is not None:
                response = await self._post_direct(client, url, content, stream=False)
            else:
                response = await client.request(
                    method,
                    url,
                    content=content,
                    files=files,
                    data=data,
                    headers=self._headers(content is not None),
                )
        self._check(response, observe)
        return response

    async def post_stream(
        self,
        path: str,
        body: Mapping[str, Any],
        sink: EventSink,
        *,
        observe: Observer | None = None,
    ) -> None:
        """POST ``body`` and feed the server-sent events of the answer to ``sink``.

        Each silence longer than ``idle_timeout`` between two reads ends the attempt.

        Raises:
            ProviderError: by status; an error event; a stall, a dropped connection or a stream
                that ended before its final event as retryable errors.
        """
        client = self._get_client()
        content = orjson.dumps(body)
        poster = self._poster
        if poster is not None:
            await self._post_stream_bare(poster, client, path, content, sink, observe)
            return
        url = self._url(path)
        with self._transport_errors():
            if self._direct is not None:
                response = await self._post_direct(client, url, content, stream=True)
            else:
                request = client.build_request(
                    "POST", url, content=content, headers=self._headers(True)
                )
                response = await client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with self._transport_errors("error body"):
                    await response.aread()
            self._check(response, observe)
            await self._read_events(response, sink)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await response.aclose()

    async def _post_stream_bare(
        self,
        poster: AiohttpPoster,
        client: httpx.AsyncClient,
        path: str,
        content: bytes,
        sink: EventSink,
        observe: Observer | None,
    ) -> None:
        """:meth:`post_stream` on the bare aiohttp session: httpx's request and response
        objects and its byte-stream layers cost more than the events themselves.
        """
        plain = (self._prebuilt or self._prebuilt_headers(client)).plain
        try:
            async with poster.session.post(
                self._url_text(path), data=content, headers=plain, timeout=poster.stream_timeout
            ) as response:
                status = response.status
                payload = await response.read() if status >= 400 else b""
                self._check_parts(status, _limit_headers(response.raw_headers), payload, observe)
                await self._pump(response.content.iter_any(), SSEDecoder(), sink)
        except poster.failures as exc:
            raise poster.error_of(self, exc, "stream") from None

    async def _read_events(self, response: httpx.Response, sink: EventSink) -> None:
        decoder = SSEDecoder()
        chunks = response.aiter_bytes()
        try:
            with self._transport_errors("stream"):
                await self._pump(chunks, decoder, sink)
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await closer()

    async def _pump(
        self, chunks: AsyncIterator[bytes], decoder: SSEDecoder, sink: EventSink
    ) -> None:
        idle = self.idle_timeout
        # Keep-alive comments (": OPENROUTER PROCESSING") prove the connection lives, not that
        # the model does: an upstream that never starts or stops mid-answer would hold the
        # attempt forever. Comments alone may hold it for the attempt's start timeout at most.
        ceiling = self.start_timeout
        received = 0
        content_at = now = anyio.current_time()
        # One scope whose deadline moves with every chunk: a scope per read cost more than
        # parsing the events it guarded.
        with anyio.CancelScope() as silence:
            while True:
                silence.deadline = now + idle
                chunk = await anext(chunks, None)
                if chunk is None:
                    if sink.ended():
                        return
                    raise ProviderUnavailableError(
                        f"{self.name}: stream ended before its final event ({received} bytes)"
                    )
                received += len(chunk)
                now = anyio.current_time()
                fed = False
                for event, data in decoder.feed(chunk):
                    fed = True
                    sink.feed(event, data)
                    if sink.done:
                        return
                if fed:
                    content_at = now
                elif ceiling is not None and now - content_at > ceiling:
                    raise ProviderTimeoutError(
                        f"{self.name}: stream kept alive by keep-alive comments only for over "
                        f"{ceiling:g}s (no event after {received} bytes)"
                    )
        raise ProviderTimeoutError(
            f"{self.name}: stream stalled (no event for {idle:g}s after {received} bytes)"
        )

    def json_object(self, response: httpx.Response) -> dict[str, Any]:
        """The JSON object a response holds.

        Raises:
            ProviderUnavailableError: the body is not a JSON object.
        """
        return self._json_of(response.status_code, response.content)

    def _json_of(self, status: int, content: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise ProviderUnavailableError(
                f"{self.name}: HTTP {status} with a body that is not a JSON object "
                f"({len(content)} bytes)",
                status=status,
            )
        return data

    async def post_json(
        self, path: str, body: Mapping[str, Any], *, observe: Observer | None = None
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        """POST ``body``; return the parsed JSON object of a 2xx answer and its rate headers.

        Raises:
            ProviderError: by status; connection errors and timeouts as retryable errors.
        """
        content = orjson.dumps(body)
        client = self._get_client()
        poster = self._poster
        if poster is None:
            response = await self.send("POST", path, content=content, observe=observe)
            return self.json_object(response), response.headers
        plain = (self._prebuilt or self._prebuilt_headers(client)).plain
        url = self._url_texts.get(path) or self._url_text(path)
        # The session awaited here rather than in a method of the poster: one coroutine frame
        # fewer per request.
        try:
            async with poster.session.post(url, data=content, headers=plain) as response:
                payload = await response.read()
                status, raw = response.status, response.raw_headers
        except poster.failures as exc:
            raise poster.error_of(self, exc) from None
        limits = _limit_headers(raw)
        if status >= 400 or (limits and observe is not None):
            self._check_parts(status, limits, payload, observe)
        return self._json_of(status, payload), limits

    def _url_text(self, path: str) -> str:
        """The full URL of ``path`` as text (kept beside the parsed URL: turning an
        ``httpx.URL`` back into text costs a little on every request).
        """
        url = self._url_texts.get(path)
        if url is None:
            url = str(self._url(path))
            if len(self._url_texts) < 64:
                self._url_texts[path] = url
        return url

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET a JSON object (a path under ``base_url`` or a full URL).

        Raises:
            ProviderError: by status, or a body that is not a JSON object (retryable).
        """
        return self.json_object(await self.send("GET", path))

    def error_message(self, data: Any, text: str) -> str:
        """The provider's message in an error body (parsed ``data``, else its ``text``; both
        OpenAI's and Anthropic's layouts).
        """
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
        self._direct = self._prebuilt = self._poster = None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()


def _current_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None under another backend (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
