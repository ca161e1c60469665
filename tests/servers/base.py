"""A small, fast, scriptable HTTP/1.1 server on 127.0.0.1 for provider-compatible test servers.

Raw asyncio streams (no framework): keep-alive, Content-Length bodies, one request at a time per
connection. A provider flavour (OpenAI-compatible, Anthropic) subclasses :class:`ScriptedServer`
and renders bodies; this module does the rest:

- scripted answers: ``responder(prompt, request_json) -> Reply`` (default: deterministic),
  cut at the request's ``max_tokens`` as providers do (``finish_reason: "length"`` /
  ``stop_reason: "max_tokens"``, usage counting what was returned);
- fault injection: ``server.push(*faults)`` for the next requests, ``server.script(match,
  *faults)`` for requests whose prompt contains ``match``, and ``fault_rate`` for random ones;
- its own rate limit (a token bucket of ``rpm`` with ``burst_s`` seconds of burst): 429 with
  ``Retry-After`` (seconds), ``retry-after-ms``, or no hint;
- latency; an API key check (401); statistics, also served at ``GET /_stats`` so a server in
  another process can be inspected.

Run in a background thread (``with Server(...) as s: s.url``) or as a subprocess
(``python tests/servers/openai_server.py --port 0 ...`` prints ``PORT <n>``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import math
import random
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Fault",
    "Reply",
    "ScriptedServer",
    "default_responder",
    "main",
    "pieces",
    "sse",
    "within",
]


@dataclass(frozen=True)
class Fault:
    """One injected fault.

    kind: ``status`` (an HTTP error), ``reset`` (drop the connection without answering),
    ``slow`` (answer normally after ``delay`` seconds), ``malformed`` (HTTP 200 with broken
    JSON), ``error_body`` (HTTP 200 whose body is an error with code ``status``), ``truncated``
    (a normal answer that stopped at max_tokens).

    Faults of a response in flight (``after`` = how many events of a streamed answer, or
    eighths of a JSON body, go out first): ``stall`` (go silent for ``delay`` seconds, then
    finish; with ``keepalive`` a comment line every ``keepalive`` seconds meanwhile), ``drop``
    (close the connection mid-response), ``stream_error`` (a streamed answer ends with the
    provider's error event for ``status``: OpenRouter's error chunk, Anthropic's ``event:
    error``; a JSON request gets ``error_body``).
    ``hang`` (accept the request and never answer: the client's timeout must end it) and
    ``cut`` (send the status line, headers and half the body, then drop the connection) are
    the provider simulator's stall and mid-body drop of a whole-body answer.
    """

    kind: str
    status: int = 500
    retry_after: float | None = None
    retry_after_ms: float | None = None
    delay: float = 0.0
    message: str = "injected fault"
    after: int = 0
    keepalive: float | None = None

    @staticmethod
    def http(
        status: int,
        *,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
        message: str = "injected fault",
    ) -> Fault:
        return Fault("status", status, retry_after, retry_after_ms, message=message)

    @staticmethod
    def reset() -> Fault:
        return Fault("reset")

    @staticmethod
    def slow(seconds: float) -> Fault:
        return Fault("slow", delay=seconds)

    @staticmethod
    def malformed() -> Fault:
        return Fault("malformed")

    @staticmethod
    def error_body(status: int = 502, message: str = "provider error mid-generation") -> Fault:
        return Fault("error_body", status, message=message)

    @staticmethod
    def truncated() -> Fault:
        return Fault("truncated")

    @staticmethod
    def stall(seconds: float, *, after: int = 2, keepalive: float | None = None) -> Fault:
        return Fault("stall", delay=seconds, after=after, keepalive=keepalive)

    @staticmethod
    def drop(*, after: int = 2) -> Fault:
        return Fault("drop", after=after)

    @staticmethod
    def stream_error(status: int = 529, *, after: int = 2, message: str = "Overloaded") -> Fault:
        return Fault("stream_error", status, after=after, message=message)

    @staticmethod
    def hang(seconds: float = 0.0) -> Fault:
        """Accept the request and never answer (for ``seconds``, default an hour)."""
        return Fault("hang", delay=seconds)

    @staticmethod
    def cut() -> Fault:
        """Send the status line, headers and half the body, then drop the connection."""
        return Fault("cut")


@dataclass
class Reply:
    """What the model "says": reasoning, answer, and whether it hit max_tokens."""

    reasoning: str
    answer: str
    truncated: bool = False


def default_responder(prompt: str, request: dict[str, Any]) -> Reply:
    """A deterministic answer derived from the prompt."""
    digest = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
    return Reply(
        reasoning=f"Let me think about this problem step by step. (#{digest % 997})",
        answer=f"The answer is \\boxed{{{digest % 100}}}.",
    )


def within(reply: Reply, max_tokens: int | None) -> Reply:
    """``reply`` as a provider returns it under ``max_tokens``: an answer longer than that (at
    about 4 characters a token, reasoning first: reasoning models spend the budget on it) is
    cut there and marked truncated (OpenAI's ``finish_reason: "length"``, Anthropic's
    ``stop_reason: "max_tokens"``). None: no cap."""
    if max_tokens is None or (len(reply.reasoning) + len(reply.answer)) // 4 <= max_tokens:
        return reply
    chars = max(0, max_tokens) * 4
    reasoning = reply.reasoning[:chars]
    return Reply(reasoning, reply.answer[: chars - len(reasoning)], truncated=True)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: a JSON object (or a raw string such as ``[DONE]``) as its data."""
    body = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {body}\n\n".encode()


def pieces(text: str, size: int = 16) -> list[str]:
    """``text`` cut into the small deltas a model streams."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


@dataclass
class Stats:
    """Counters, readable from the test while the server runs."""

    requests: int = 0
    answered: int = 0
    truncated: int = 0
    throttled: int = 0
    faults: int = 0
    unauthorized: int = 0
    billed_usd: float = 0.0
    inflight: int = 0
    max_inflight: int = 0
    status: collections.Counter[int] = field(default_factory=collections.Counter)
    # how many successful (billed) answers each prompt got
    answers_by_prompt: collections.Counter[str] = field(default_factory=collections.Counter)
    # how many requests (any outcome) each prompt got
    requests_by_prompt: collections.Counter[str] = field(default_factory=collections.Counter)
    arrivals: list[float] = field(default_factory=list)
    answer_times: list[float] = field(default_factory=list)
    throttle_times: list[float] = field(default_factory=list)
    batch_requests: int = 0
    batches: int = 0
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    # streams sent gzip-compressed (see ``gzip_stream``)
    gzipped_streams: int = 0

    def requests_matching(self, text: str) -> int:
        """Requests whose prompt contains ``text``."""
        return sum(n for prompt, n in self.requests_by_prompt.items() if text in prompt)

    def answers_matching(self, text: str) -> int:
        """Billed answers whose prompt contains ``text``."""
        return sum(n for prompt, n in self.answers_by_prompt.items() if text in prompt)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "answered": self.answered,
            "truncated": self.truncated,
            "throttled": self.throttled,
            "faults": self.faults,
            "unauthorized": self.unauthorized,
            "billed_usd": self.billed_usd,
            "max_inflight": self.max_inflight,
            "status": {str(k): v for k, v in self.status.items()},
            "answer_times": self.answer_times,
            "throttle_times": self.throttle_times,
            "arrivals": self.arrivals,
        }


class ScriptedServer:
    """The provider-independent server. Subclasses define the API's paths and bodies."""

    path = "/"
    flavour = "base"

    def __init__(
        self,
        *,
        rpm: float | None = None,
        burst_s: float = 1.0,
        retry_after: str | None = "ms",
        rate_headers: bool = False,
        latency: float = 0.0,
        api_key: str | None = None,
        cost_per_answer: float = 0.001,
        responder: Callable[[str, dict[str, Any]], Reply] = default_responder,
        fault_rate: float = 0.0,
        random_faults: tuple[Fault, ...] = (),
        seed: int = 0,
        record_headers: bool = False,
        event_delay: float = 0.0,
        port: int = 0,
        honour_max_tokens: bool = True,
        gzip_stream: bool = False,
    ) -> None:
        self.rpm = rpm
        #: compress a stream with gzip when the request offers it, flushed after each event
        #: (as a proxy compressing SSE does: each event decodable on arrival)
        self.gzip_stream = gzip_stream
        #: cut answers at the request's max_tokens, as providers do (False: a host that
        #: ignores it and answers in full, reporting "stop")
        self.honour_max_tokens = honour_max_tokens
        #: seconds between two events of a streamed answer (a slow but live stream)
        self.event_delay = event_delay
        self.burst_s = burst_s
        self.retry_after = retry_after
        self.rate_headers = rate_headers
        self.latency = latency
        self.api_key = api_key
        self.cost_per_answer = cost_per_answer
        self.responder = responder
        self.fault_rate = fault_rate
        self.random_faults = random_faults or (
            Fault.http(500),
            Fault.http(502),
            Fault.http(503),
            Fault.http(429),
            Fault.reset(),
            Fault.malformed(),
            Fault.error_body(),
        )
        self.rng = random.Random(seed)
        self.record_headers = record_headers
        self.port = port
        self.stats = Stats()
        self._queue: collections.deque[Fault] = collections.deque()
        self._scripts: list[tuple[str, collections.deque[Fault]]] = []
        self._lock = threading.Lock()
        self._bucket_level = 0.0
        self._bucket_time = 0.0
        self._last_remaining = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        #: how many status polls a batch answers "in progress" before it ends
        self.batch_polls = 1
        self._objects: dict[str, Any] = {}
        self._next_id = 0

    # --- scripting ---------------------------------------------------------------------------

    def push(self, *faults: Fault) -> None:
        """Apply these faults, in order, to the next requests (whatever their prompt)."""
        with self._lock:
            self._queue.extend(faults)

    def script(self, match: str, *faults: Fault) -> None:
        """Apply these faults, in order, to the next requests whose prompt contains ``match``."""
        with self._lock:
            self._scripts.append((match, collections.deque(faults)))

    def _next_fault(self, prompt: str) -> Fault | None:
        with self._lock:
            for match, faults in self._scripts:
                if faults and match in prompt:
                    return faults.popleft()
            if self._queue:
                return self._queue.popleft()
        if self.fault_rate and self.rng.random() < self.fault_rate:
            return self.rng.choice(self.random_faults)
        return None

    # --- rate limit --------------------------------------------------------------------------

    def _take_token(self, now: float) -> tuple[bool, float, float]:
        """Take one request token: (allowed, seconds until the next token, tokens left)."""
        if self.rpm is None:
            return True, 0.0, math.inf
        rate = self.rpm / 60.0
        capacity = max(1.0, rate * self.burst_s)
        if self._bucket_time == 0.0:
            self._bucket_level, self._bucket_time = capacity, now
        self._bucket_level = min(capacity, self._bucket_level + (now - self._bucket_time) * rate)
        self._bucket_time = now
        if self._bucket_level >= 1.0:
            self._bucket_level -= 1.0
            return True, 0.0, self._bucket_level
        return False, (1.0 - self._bucket_level) / rate, self._bucket_level

    # --- admission hooks (a provider simulator overrides them) --------------------------------

    def admit(
        self, now: float, request: dict[str, Any], prompt: str
    ) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """None to serve the request, or (status, error body, headers) to refuse it.

        The default is this server's own token bucket of ``rpm`` requests per minute.
        """
        allowed, wait, remaining = self._take_token(now)
        self._last_remaining = remaining
        if allowed:
            return None
        hdrs: dict[str, str] = {}
        if self.retry_after == "s":
            hdrs["retry-after"] = str(max(1, math.ceil(wait)))
        elif self.retry_after == "ms":
            hdrs["retry-after-ms"] = f"{wait * 1000.0:.1f}"
        if self.rate_headers:
            hdrs.update(self.limit_headers(0, wait))
        return 429, self.error_body(429, "rate limited"), hdrs

    def answer_headers(self, request: dict[str, Any], body: dict[str, Any]) -> dict[str, str]:
        """Headers sent with a successful answer (rate-limit headers when asked for)."""
        return self.limit_headers(self._last_remaining, 0.0) if self.rate_headers else {}

    def on_unanswered(self, request: dict[str, Any]) -> None:
        """Called when an admitted request gets no answer (a stall or a dropped body)."""

    async def _hang(self, seconds: float) -> None:
        await asyncio.sleep(seconds or 3600.0)

    # --- flavour hooks -----------------------------------------------------------------------

    def max_tokens_of(self, request: dict[str, Any]) -> int | None:
        """The request's cap on generated tokens (None: not set)."""
        cap = request.get("max_tokens") or request.get("max_completion_tokens")
        return None if cap is None else int(cap)

    def reply_to(self, prompt: str, request: dict[str, Any]) -> Reply:
        """What the model answers, cut at the request's ``max_tokens`` as providers do."""
        reply = self.responder(prompt, request)
        return within(reply, self.max_tokens_of(request)) if self.honour_max_tokens else reply

    def prompt_of(self, request: dict[str, Any]) -> str:
        messages = request.get("messages") or []
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))

    def authorized(self, headers: dict[str, str]) -> bool:
        raise NotImplementedError

    def received_key(self, headers: dict[str, str]) -> str:
        return headers.get("authorization", "").removeprefix("Bearer ")

    def success_body(self, request: dict[str, Any], reply: Reply, cost: float) -> dict[str, Any]:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def limit_headers(self, remaining: float, reset: float) -> dict[str, str]:
        return {}

    def stream_events(self, request: dict[str, Any], reply: Reply, cost: float) -> list[bytes]:
        """The server-sent events of a streamed answer, each a whole event (blank line ended)."""
        raise NotImplementedError

    def stream_error_event(self, status: int, message: str) -> bytes:
        """The event a provider sends when generation fails mid-stream."""
        raise NotImplementedError

    def keepalive_event(self) -> bytes:
        """What the provider sends to keep a quiet stream open."""
        return b": keep-alive\n\n"

    def route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes] | None:
        """Other endpoints (batch APIs): (status, body) or None for 404."""
        return None

    def batch_answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer one request of a batch: (HTTP status, body), with scripted faults applied."""
        stats = self.stats
        prompt = self.prompt_of(request)
        stats.requests += 1
        stats.batch_requests += 1
        stats.requests_by_prompt[prompt] += 1
        fault = self._next_fault(prompt)
        truncated = False
        if fault is not None:
            stats.faults += 1
            if fault.kind in ("status", "error_body"):
                return fault.status, self.error_body(fault.status, fault.message)
            if fault.kind in ("reset", "malformed", "slow", "stall", "drop", "hang", "cut"):
                return 500, self.error_body(500, "internal error")
            truncated = fault.kind == "truncated"
        reply = self.reply_to(prompt, request)
        reply.truncated = reply.truncated or truncated
        stats.answered += 1
        stats.truncated += reply.truncated
        stats.billed_usd += self.cost_per_answer * 0.5
        stats.answers_by_prompt[prompt] += 1
        return 200, self.success_body(request, reply, self.cost_per_answer * 0.5)

    def finish_batches(self) -> None:
        """Let every batch submitted so far end at its next status poll."""
        for obj in self._objects.values():
            if isinstance(obj, dict) and "polls" in obj:
                obj["polls"] = 0

    def new_id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}{self._next_id}"

    # --- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                keep = await self._respond(method, target, headers, body, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # a client hung up, or the server is stopping
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    def _write(
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        reason = {
            200: "OK",
            400: "Bad Request",
            401: "Unauthorized",
            402: "Payment Required",
            403: "Forbidden",
            404: "Not Found",
            408: "Request Timeout",
            429: "Too Many Requests",
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            529: "Overloaded",
        }.get(status, "Status")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n{extra}\r\n".encode("latin-1")
            + payload
        )

    async def _respond(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if method == "GET" and target == "/_stats":
            self._write(writer, 200, json.dumps(self.stats.to_json()).encode())
            return True
        if method == "POST" and target == "/_push":
            for spec in json.loads(body):
                self.push(Fault(**spec))
            self._write(writer, 200, b"{}")
            return True
        if method in ("GET", "POST") and target != self.path:
            if not self.authorized(headers):
                self._write(
                    writer, 401, json.dumps(self.error_body(401, "invalid api key")).encode()
                )
                return True
            routed = self.route(method, target, headers, body)
            if routed is not None:
                status, payload = routed
                self._write(writer, status, payload)
                return True
        if method != "POST" or target != self.path:
            self._write(
                writer, 404, json.dumps(self.error_body(404, f"no route {target}")).encode()
            )
            return True
        stats = self.stats
        now = time.monotonic()
        stats.requests += 1
        stats.arrivals.append(now)
        stats.inflight += 1
        stats.max_inflight = max(stats.max_inflight, stats.inflight)
        if self.record_headers:
            stats.seen_headers.append(dict(headers))
        try:
            return await self._serve(headers, body, writer, now)
        finally:
            stats.inflight -= 1

    async def _serve(
        self, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter, now: float
    ) -> bool:
        stats = self.stats
        try:
            request = json.loads(body)
        except ValueError:
            stats.status[400] += 1
            self._write(writer, 400, json.dumps(self.error_body(400, "body is not JSON")).encode())
            return True
        prompt = self.prompt_of(request)
        stats.requests_by_prompt[prompt] += 1
        if not self.authorized(headers):
            stats.unauthorized += 1
            stats.status[401] += 1
            # Echo the key back, as some providers do: clients must redact it.
            message = f"invalid api key: {self.received_key(headers)}"
            self._write(writer, 401, json.dumps(self.error_body(401, message)).encode())
            return True
        refusal = self.admit(now, request, prompt)
        if refusal is not None:
            status, payload_obj, hdrs = refusal
            if status == 429:
                stats.throttled += 1
                stats.throttle_times.append(now)
            stats.status[status] += 1
            self._write(writer, status, json.dumps(payload_obj).encode(), hdrs)
            return True
        fault = self._next_fault(prompt)
        streaming = bool(request.get("stream"))
        if self.latency:
            await asyncio.sleep(self.latency)
        truncated = False
        in_flight: Fault | None = None
        if fault is not None:
            stats.faults += 1
            if fault.kind == "stream_error" and not streaming:
                fault = Fault.error_body(fault.status, fault.message)
            if fault.kind == "status":
                hdrs = {}
                if fault.retry_after is not None:
                    hdrs["retry-after"] = f"{fault.retry_after:g}"
                if fault.retry_after_ms is not None:
                    hdrs["retry-after-ms"] = f"{fault.retry_after_ms:g}"
                stats.status[fault.status] += 1
                payload = json.dumps(self.error_body(fault.status, fault.message)).encode()
                self._write(writer, fault.status, payload, hdrs)
                return True
            if fault.kind == "reset":
                stats.status[0] += 1
                writer.transport.abort()
                return False
            if fault.kind == "malformed":
                stats.status[200] += 1
                if streaming:
                    events = [b'data: {"id": "x", "choices": [{"delta": {"conte\n\n']
                    return await self._write_stream(writer, events, None, {})
                self._write(writer, 200, b'{"id": "x", "choices": [{"message": {"conte')
                return True
            if fault.kind == "error_body":
                stats.status[200] += 1
                if streaming:
                    events = [self.stream_error_event(fault.status, fault.message)]
                    return await self._write_stream(writer, events, None, {})
                self._write(
                    writer, 200, json.dumps(self.error_body(fault.status, fault.message)).encode()
                )
                return True
            if fault.kind == "hang":
                # Accept the request, then never answer: the client's timeout must end it.
                stats.status[0] += 1
                self.on_unanswered(request)
                await self._hang(fault.delay)
                writer.transport.abort()
                return False
            if fault.kind == "cut":
                # Start a 200 answer, then lose the connection mid-body.
                stats.status[0] += 1
                self.on_unanswered(request)
                payload = json.dumps(
                    self.success_body(request, self.reply_to(prompt, request), self.cost_per_answer)
                ).encode()
                self._write(writer, 200, payload[: len(payload) // 2])
                writer.write(b"")  # headers and half the body are on the wire
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                writer.transport.abort()
                return False
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            if fault.kind == "truncated":
                truncated = True
            if fault.kind in ("stall", "drop", "stream_error"):
                in_flight = fault
        reply = self.reply_to(prompt, request)
        reply.truncated = reply.truncated or truncated
        body_obj = self.success_body(request, reply, self.cost_per_answer)
        hdrs = self.answer_headers(request, body_obj)
        stats.status[200] += 1

        def bill() -> None:
            # Counted just before the answer's last bytes go out, so a client that has the
            # whole answer always finds it in the statistics.
            stats.answered += 1
            stats.truncated += reply.truncated
            stats.billed_usd += self.cost_per_answer
            stats.answers_by_prompt[prompt] += 1
            stats.answer_times.append(time.monotonic())

        try:
            if streaming:
                events = self.stream_events(request, reply, self.cost_per_answer)
                if self.gzip_stream and "gzip" in headers.get("accept-encoding", ""):
                    hdrs = {**hdrs, "content-encoding": "gzip"}
                    stats.gzipped_streams += 1
                return await self._write_stream(writer, events, in_flight, hdrs, bill)
            return await self._write_body(
                writer, json.dumps(body_obj).encode(), in_flight, hdrs, bill
            )
        except ConnectionError:
            return False

    async def _write_body(
        self,
        writer: asyncio.StreamWriter,
        payload: bytes,
        fault: Fault | None,
        hdrs: dict[str, str],
        bill: Callable[[], None],
    ) -> bool:
        """Send a JSON answer, maybe stalling or dropping part-way; return keep-alive."""
        if fault is None:
            bill()
            self._write(writer, 200, payload, hdrs)
            await writer.drain()
            return True
        cut = len(payload) * min(fault.after, 7) // 8
        extra = "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        writer.write(
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n{extra}\r\n".encode("latin-1")
            + payload[:cut]
        )
        await writer.drain()
        if fault.kind == "drop":
            writer.transport.abort()
            return False
        await asyncio.sleep(fault.delay)
        bill()
        writer.write(payload[cut:])
        await writer.drain()
        return True

    async def _write_stream(
        self,
        writer: asyncio.StreamWriter,
        events: list[bytes],
        fault: Fault | None,
        hdrs: dict[str, str],
        bill: Callable[[], None] | None = None,
    ) -> bool:
        """Send server-sent events (chunked), applying an in-flight fault; return keep-alive."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        writer.write(
            (
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                f"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n{extra}\r\n"
            ).encode("latin-1")
        )
        send = _Encoder(writer, gzip=hdrs.get("content-encoding") == "gzip")
        for index, event in enumerate(events):
            if fault is not None and index == min(fault.after, len(events) - 1):
                if fault.kind == "drop":
                    await writer.drain()
                    writer.transport.abort()
                    return False
                if fault.kind == "stream_error":
                    send(self.stream_error_event(fault.status, fault.message))
                    bill = None
                    break
                await self._stall(send, writer, fault)
            if bill is not None and index == len(events) - 1:
                bill()
            send(event)
            await writer.drain()
            if self.event_delay:
                await asyncio.sleep(self.event_delay)
        send.finish()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _stall(
        self, send: Callable[[bytes], None], writer: asyncio.StreamWriter, fault: Fault
    ) -> None:
        if not fault.keepalive:
            await asyncio.sleep(fault.delay)
            return
        deadline = time.monotonic() + fault.delay
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(fault.keepalive, left))
            send(self.keepalive_event())
            await writer.drain()

    @staticmethod
    def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, on_ready: Callable[[int], None] | None = None) -> None:
        """Serve until :meth:`stop` (or forever when run as a script)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, backlog=4096, limit=1 << 22
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        if on_ready is not None:
            on_ready(self.port)
        async with self._server:
            await self._stop.wait()

    def start(self) -> ScriptedServer:
        """Serve from a background thread; return once it listens."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def stop(self) -> None:
        """Stop a server started with :meth:`start`."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(cls: type[ScriptedServer], argv: list[str] | None = None) -> None:
    """Run a server as a script: prints ``PORT <n>`` once it listens."""
    parser = argparse.ArgumentParser(description=f"{cls.flavour} test server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rpm", type=float, default=None)
    parser.add_argument("--burst-s", type=float, default=1.0)
    parser.add_argument("--retry-after", choices=["s", "ms", "none"], default="ms")
    parser.add_argument("--rate-headers", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    server = cls(
        rpm=args.rpm,
        burst_s=args.burst_s,
        retry_after=None if args.retry_after == "none" else args.retry_after,
        rate_headers=args.rate_headers,
        latency=args.latency,
        api_key=args.api_key,
        fault_rate=args.fault_rate,
        seed=args.seed,
        port=args.port,
    )

    def ready(port: int) -> None:
        print(f"PORT {port}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(ready))
    sys.exit(0)


class _Encoder:
    """Writes a stream's pieces as HTTP chunks, gzip-compressed and flushed per piece if asked."""

    def __init__(self, writer: asyncio.StreamWriter, *, gzip: bool) -> None:
        self._writer = writer
        self._gzip = zlib.compressobj(wbits=31) if gzip else None

    def __call__(self, data: bytes) -> None:
        if self._gzip is not None:
            data = self._gzip.compress(data) + self._gzip.flush(zlib.Z_SYNC_FLUSH)
        ScriptedServer._chunk(self._writer, data)

    def finish(self) -> None:
        """End the compressed stream (its gzip trailer), if compressed."""
        if self._gzip is not None:
            ScriptedServer._chunk(self._writer, self._gzip.flush())
