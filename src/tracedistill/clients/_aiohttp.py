"""The bare aiohttp session under the default transport: JSON POSTs and streams sent on it
directly, and the request headers they reuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from tracedistill.errors import ProviderError, ProviderTimeoutError, ProviderUnavailableError

if TYPE_CHECKING:
    from tracedistill.clients.http import HttpClient

__all__ = ["AiohttpPoster", "Prebuilt"]


class AiohttpPoster:
    """JSON POSTs on a bare aiohttp session without a cookie jar; the same session serves the
    httpx-aiohttp transport under the client, so both share one connection pool.

    With an attempt limit (``total``), the session's own whole-request timeout enforces it:
    the wait for a connection, sending and reading the whole body, at the cost of one timer
    per request (cheaper than a cancel scope around the attempt).
    """

    def __init__(
        self,
        session: Any,
        transport: httpx.AsyncBaseTransport,
        total: float | None,
        timeout: httpx.Timeout,
    ) -> None:
        import aiohttp

        self.session = session
        self.transport = transport
        self.total = total
        # aiohttp's exception classes, looked up once: an import statement in post() would
        # run the import machinery's lookup on every request.
        self._lost = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)
        self._silence = aiohttp.ServerTimeoutError
        #: what a POST may raise that :meth:`error_of` maps (aiohttp's timeouts are
        #: TimeoutErrors, its connection errors ClientErrors or OSErrors)
        self.failures = (aiohttp.ClientError, OSError, TimeoutError)
        #: a stream's timeouts: connecting and each read as httpx's were, and no whole-request
        #: limit (an answer that keeps sending events is never cut)
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool
        )

    @classmethod
    def create(
        cls, max_connections: int, timeout: httpx.Timeout, total: float | None
    ) -> AiohttpPoster | None:
        """A poster over a new session, or None when aiohttp or httpx-aiohttp is missing."""
        try:
            import aiohttp
            from httpx_aiohttp import AiohttpTransport
        except ImportError:
            return None
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections),
            cookie_jar=aiohttp.DummyCookieJar(),
            # A silence can never outlast the whole-request limit: with one, no read timer
            # (re-armed on every chunk received) is needed. Streams and httpx-aiohttp's
            # requests (GETs, uploads) pass their own timeouts and never take this total.
            timeout=aiohttp.ClientTimeout(
                total=total,
                sock_connect=timeout.connect,
                sock_read=timeout.read if total is None else None,
            ),
        )
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        return cls(session, AiohttpTransport(limits=limits, client=session), total, timeout)

    def error_of(
        self, client: HttpClient, exc: BaseException, what: str = "request"
    ) -> ProviderError:
        """The retryable error one of :attr:`failures` stands for (the key redacted), raised
        during ``what`` (a request; a stream, which has no whole-request limit).
        """
        if isinstance(exc, self._lost):
            return ProviderUnavailableError(
                f"{client.name}: connection lost ({type(exc).__name__})"
            )
        if isinstance(exc, self._silence) or (what != "request" and isinstance(exc, TimeoutError)):
            # connecting, or a silence
            return ProviderTimeoutError(f"{client.name}: {what} timed out ({type(exc).__name__})")
        if isinstance(exc, TimeoutError):  # the whole-request limit (aiohttp raises a bare one)
            what = f"within {self.total:g}s" if self.total else f"({type(exc).__name__})"
            return ProviderTimeoutError(f"{client.name}: no complete response {what}")
        during = "" if what == "request" else f" during the {what}"
        return ProviderUnavailableError(
            f"{client.name}: connection error{during} ({type(exc).__name__}: "
            f"{client.redact(str(exc))[:200]})"
        )


class Prebuilt:
    """Headers (with the key) and extensions reused by every JSON POST; never shown in a repr."""

    __slots__ = ("extensions", "headers", "plain")

    def __init__(self, headers: httpx.Headers, extensions: dict[str, Any]) -> None:
        self.headers = headers
        self.extensions = extensions
        #: the same headers as a plain dict, for the bare aiohttp path, offering only the
        #: encodings aiohttp can decode (httpx offers zstd when ``zstandard`` is installed,
        #: aiohttp decodes it only with ``backports.zstd``; a CDN in front of a provider
        #: answers in what was offered)
        self.plain = dict(headers.items())
        offered = self.plain.get("accept-encoding")
        if offered is not None:
            self.plain["accept-encoding"] = aiohttp_decodable(offered)

    def __repr__(self) -> str:
        return "<prebuilt request headers>"


def aiohttp_decodable(offered: str) -> str:
    """``offered`` (an Accept-Encoding value) less the encodings aiohttp cannot decode here."""
    try:
        from aiohttp import compression_utils
    except ImportError:  # pragma: no cover - the bare path needs aiohttp
        return offered
    unsupported = set()
    if not getattr(compression_utils, "HAS_ZSTD", False):
        unsupported.add("zstd")
    if not getattr(compression_utils, "HAS_BROTLI", False):
        unsupported.add("br")
    kept = [
        part.strip()
        for part in offered.split(",")
        if part.split(";")[0].strip().lower() not in unsupported
    ]
    return ", ".join(p for p in kept if p) or "identity"
